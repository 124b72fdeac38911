"""What fits on this machine: for each model in the Ollama store and the HF cache, whether VeloLLM runs
it natively, at which precision, with how much KV cache room, and the `serve` flags to use."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from velollm.errors import VeloLLMError
from velollm.hw.detect import HardwareInfo
from velollm.hw.recommend import Recommendation, main_gpu

_ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2}
_KV_ITEMSIZE = {**_ITEMSIZE, "fp8": 1}  # --kv-cache-dtype fp8: float8 e4m3, one byte per value
_MIN_KV_TOKENS = 32  # two KV blocks: less than that and no request can run
_GPU_OVERHEAD = 1 << 30  # CUDA context, activations and allocator slack beside weights and KV cache


@dataclass(frozen=True)
class ModelFit:
    name: str
    source: str  # "ollama" | "hf"
    native: bool
    reason: str  # why not native ("" when native)
    stored: str = ""  # precision in the files: "Q4_K_M", "BF16"
    precision: str = ""  # what the engine computes in here: "bfloat16" (GGUF matrices may stay quantized)
    weight_bytes: int = 0  # in `precision`
    context_length: int = 0  # the model's
    kv_tokens: int = 0  # KV cache tokens that fit beside the weights, in `kv_cache_dtype`
    max_model_len: int = 0  # the context to serve with: the model's, or what the KV room holds
    serve_flags: str = ""
    kv_cache_dtype: str = ""  # what the KV room is counted in: "fp8" where advised, else `precision`
    kv_tokens_fp8: int = 0  # the room with --kv-cache-dtype fp8 where the GPU has it but it is not advised; else 0

    @property
    def full_contexts(self) -> int:
        """Sequences at full `max_model_len` the KV room holds at once (more run when they are shorter)."""
        return self.kv_tokens // self.max_model_len if self.max_model_len else 0


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype: str) -> int:
    """K and V of one token in every layer; `dtype` is the KV cache's (a model dtype, or fp8)."""
    return 2 * num_layers * num_kv_heads * head_dim * _KV_ITEMSIZE[dtype]


def kv_budget(hw: HardwareInfo, rec: Recommendation, weight_bytes: int) -> int:
    """Bytes left for the KV cache once the weights are in: the GPU's share (what the engine will measure
    as free), or on CPU the recommended KV memory, bounded by the RAM the weights leave."""
    gpu = main_gpu(hw)
    if gpu is not None:
        usable = gpu.total_memory * (rec.gpu_memory_utilization or 0.9)
        if gpu.free_memory is not None:
            usable = min(usable, gpu.free_memory)
        return int(usable - weight_bytes - _GPU_OVERHEAD)
    return int(min(rec.kv_cache_memory or 0, hw.available_memory - weight_bytes))


def candidates(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """(specifier, source) for every model in the Ollama store and the HF cache."""
    from velollm.engine.loader import hf_cache, ollama_store

    store = ollama_store.models_dir(env)
    out = [(m.display_name, "ollama") for m in ollama_store.list_models(store)] if store.is_dir() else []
    return out + [(repo, "hf") for repo in hf_cache.list_repos(hf_cache.hub_dir(env))]


def model_fit(spec: str, source: str, hw: HardwareInfo, rec: Recommendation, env: Mapping[str, str]) -> ModelFit:
    from velollm.engine.loader import hf_cache, ollama_store
    from velollm.engine.loader.resolve import resolve_model

    try:
        # the dtype the serve flags name, so what is computed here is what `serve` will run
        src = resolve_model(spec, dtype=rec.dtype, device=rec.device, ollama_models=ollama_store.models_dir(env),
                            hf_hub=hf_cache.hub_dir(env))
    except (VeloLLMError, ValueError, OSError) as exc:
        return ModelFit(spec, source, False, str(exc))
    cfg, info = src.config, src.info
    precision = cfg.dtype
    weights = src.weight_bytes or info.parameter_count * _ITEMSIZE[precision]  # GGUF kept quantized: its size
    budget = max(0, kv_budget(hw, rec, weights))

    def room(kv_dtype: str) -> int:
        return budget // kv_bytes_per_token(cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim, kv_dtype)

    kv_dtype = "fp8" if rec.kv_cache_dtype == "fp8" else precision  # what the serve flags below will store
    kv_tokens = room(kv_dtype)
    fp8_tokens = room("fp8") if rec.fp8_kv_cache and kv_dtype != "fp8" else 0
    common = {"stored": info.quantization_level, "precision": precision, "weight_bytes": weights,
              "context_length": cfg.max_position_embeddings, "kv_tokens": kv_tokens, "kv_cache_dtype": kv_dtype,
              "kv_tokens_fp8": fp8_tokens}
    if kv_tokens < _MIN_KV_TOKENS:
        return ModelFit(spec, source, False, f"does not fit: {weights / 2**30:.1f} GiB of weights in {precision} "
                        f"leave no room for a KV cache on {rec.device}", **common)  # type: ignore[arg-type]
    max_len = min(cfg.max_position_embeddings, kv_tokens)
    flags = f"--model {shlex.quote(spec)} --max-model-len {max_len} {rec.serve_flags()}"
    return ModelFit(spec, source, True, "", max_model_len=max_len, serve_flags=flags, **common)  # type: ignore[arg-type]


def model_fits(hw: HardwareInfo, rec: Recommendation, env: Mapping[str, str]) -> list[ModelFit]:
    return [model_fit(spec, source, hw, rec, env) for spec, source in candidates(env)]

