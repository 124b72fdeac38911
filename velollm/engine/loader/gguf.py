"""GGUF models: metadata -> ModelConfig + ModelInfo, tensors -> (hf_name, tensor) in the compute dtype.

Weights are either kept quantized (planes of the file's blocks, computed in place by the quantized
kernels: gguf_quantized.py says when) or dequantized at load (velollm.kernels.gguf_dequant, `gguf.quants`
for other types).
What computes each tensor (and undoes the Q/K row permutation of llama.cpp's converter): gguf_jobs.py.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from velollm.config import ModelConfig, RopeScaling
from velollm.engine.loader.chunk_pool import default_workers
from velollm.engine.loader.gguf_file import GGUFFile, TensorInfo, TensorTable
from velollm.engine.loader.gguf_jobs import dequantize_bytes, weight_jobs
from velollm.engine.loader.gguf_quantized import map_bytes, resident_weight_bytes, resolve_quantization
from velollm.engine.loader.source import TORCH_DTYPES, ModelInfo, ModelSource, cuda_free_bytes, default_device
from velollm.engine.loader.weight_jobs import run_jobs
from velollm.errors import UnsupportedModel
from velollm.kernels.gguf_planes import QuantizedWeight
from velollm.kernels.int4_cpu import Int4Weight

if TYPE_CHECKING:
    from velollm.engine.text.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

# GGUF general.architecture -> (HF architecture, our model_type).
ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", "llama"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
}
SUPPORTED_TYPES = frozenset(
    {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}
)
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
_SKIPPED = {"rope_freqs.weight"}  # folded into ModelConfig.rope_scaling
MIN_KV_TOKENS = 512  # the smallest KV cache worth serving with, for the memory check


def hf_name(name: str) -> str | None:
    """The Hugging Face name of a GGUF tensor, None if it is not one of ours."""
    if name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[name]
    m = _BLOCK_RE.fullmatch(name)
    if m and m.group(2) in _BLOCK_NAMES:
        return f"model.layers.{m.group(1)}.{_BLOCK_NAMES[m.group(2)]}.{m.group(3)}"
    return None


def check_supported(f: GGUFFile) -> None:
    """Raise UnsupportedModel naming the architecture, tensor type or tensor VeloLLM cannot run."""
    arch = f.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise UnsupportedModel(f"{f.path}: unsupported GGUF architecture {arch!r}; VeloLLM runs {sorted(ARCHITECTURES)}")
    if int(f.get(f"{arch}.expert_count", 0) or 0) > 0:
        raise UnsupportedModel(f"{f.path}: mixture-of-experts {arch!r} models are not supported")
    for info in f.tensors.values():
        if info.type_name not in SUPPORTED_TYPES:
            raise UnsupportedModel(f"{f.path}: tensor {info.name!r} has tensor type {info.type_name}, "
                                   f"VeloLLM dequantizes {sorted(SUPPORTED_TYPES)}")
        if info.name not in _SKIPPED and hf_name(info.name) is None:
            raise UnsupportedModel(f"{f.path}: unexpected tensor {info.name!r} for architecture {arch!r}")
    if "token_embd.weight" not in f.tensors:
        raise UnsupportedModel(f"{f.path}: no token_embd.weight tensor")


def _uniform(f: GGUFFile, key: str, default: int | None = None) -> int:
    value = f.get(key, default)
    if value is None:
        raise UnsupportedModel(f"{f.path}: GGUF metadata {key!r} is missing")
    if isinstance(value, np.ndarray):  # per-layer values (hybrid models)
        if len(set(value.tolist())) != 1:
            raise UnsupportedModel(f"{f.path}: per-layer {key!r} values are not supported")
        value = value[0]
    return int(value)


def read_config(f: GGUFFile, dtype: str) -> ModelConfig:
    """ModelConfig from GGUF metadata (the llama.cpp keys `<arch>.*`)."""
    check_supported(f)
    arch = f.get("general.architecture")
    hf_arch, model_type = ARCHITECTURES[arch]
    p = f"{arch}."
    hidden = _uniform(f, p + "embedding_length")
    heads = _uniform(f, p + "attention.head_count")
    head_dim = _uniform(f, p + "attention.key_length", hidden // heads)
    rope_dim = _uniform(f, p + "rope.dimension_count", head_dim)
    if rope_dim != head_dim:
        raise UnsupportedModel(f"{f.path}: partial rotary embedding ({rope_dim} of {head_dim}) is not supported")
    eos = [f.get(k) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")]
    return ModelConfig(
        architecture=hf_arch,
        model_type=model_type,
        vocab_size=f.tensors["token_embd.weight"].shape[0],
        hidden_size=hidden,
        intermediate_size=_uniform(f, p + "feed_forward_length"),
        num_hidden_layers=_uniform(f, p + "block_count"),
        num_attention_heads=heads,
        num_key_value_heads=_uniform(f, p + "attention.head_count_kv", heads),
        head_dim=head_dim,
        max_position_embeddings=_uniform(f, p + "context_length", 2048),
        rms_norm_eps=float(f.get(p + "attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(f.get(p + "rope.freq_base", 10000.0)),
        rope_scaling=_rope_scaling(f, p, head_dim),
        tie_word_embeddings="output.weight" not in f.tensors,
        attention_bias="blk.0.attn_q.bias" in f.tensors,
        qk_norm="blk.0.attn_q_norm.weight" in f.tensors,
        dtype=dtype,
        bos_token_id=_opt_int(f.get("tokenizer.ggml.bos_token_id")),
        eos_token_ids=tuple(dict.fromkeys(int(e) for e in eos if e is not None)),
    )


def _opt_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[arg-type]


def _rope_scaling(f: GGUFFile, p: str, head_dim: int) -> RopeScaling | None:
    kind = f.get(p + "rope.scaling.type", "none")
    factor = float(f.get(p + "rope.scaling.factor", 1.0) or 1.0)
    if kind not in ("none", "") and factor != 1.0:
        raise UnsupportedModel(f"{f.path}: rope scaling {kind!r} is not supported (only llama3 rope_freqs)")
    info = f.tensors.get("rope_freqs.weight")
    if info is None:
        return None
    # Llama 3.1+ GGUFs carry the llama3 frequency divisors as a tensor; recover the parameters and
    # check they reproduce it, since the model computes them from RopeScaling.
    freqs = _dequantize(f, info).to(torch.float32, copy=True)
    theta = float(f.get(p + "rope.freq_base", 10000.0))
    orig = int(f.get(p + "rope.scaling.original_context_length", 8192) or 8192)
    scaling = RopeScaling("llama3", float(freqs.max()), 1.0, 4.0, orig)
    expected = llama3_rope_divisors(theta, head_dim, scaling)
    if expected.shape != freqs.shape or not torch.allclose(expected, freqs, rtol=1e-3, atol=1e-3):
        raise UnsupportedModel(f"{f.path}: rope_freqs.weight does not match llama3 rope scaling")
    return scaling


def llama3_rope_divisors(theta: float, head_dim: int, s: RopeScaling) -> torch.Tensor:
    """The per-frequency divisors that llama.cpp's converter writes as rope_freqs.weight."""
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    wavelen = 2 * torch.pi / freqs
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    mid = 1.0 / ((1 - smooth) / s.factor + smooth)
    out = torch.where(wavelen < high_wavelen, torch.ones_like(wavelen), torch.where(wavelen > low_wavelen, s.factor, mid))
    return out.float()


def quantization_level(f: GGUFFile) -> str:
    """Ollama's quantization_level: general.file_type by name, else the most common matrix type."""
    import gguf

    file_type = f.get("general.file_type")
    if file_type is not None:
        try:
            return gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    kinds = Counter(t.type_name for t in f.tensors.values() if len(t.shape) == 2)
    return kinds.most_common(1)[0][0] if kinds else "unknown"


def parameter_count(f: GGUFFile) -> int:
    return sum(t.num_elements for t in f.tensors.values() if t.name not in _SKIPPED)


def model_info(f: GGUFFile, name: str, **overrides: object) -> ModelInfo:
    fields: dict[str, object] = {
        "name": name, "format": "gguf", "family": str(f.get("general.architecture", "unknown")),
        "parameter_count": parameter_count(f), "quantization_level": quantization_level(f),
        "size_bytes": f.file_size, "digest": "", "modified_at": f.path.stat().st_mtime, "path": str(f.path),
        "template": f.get("tokenizer.chat_template"), "license": str(f.get("general.license", "") or ""),
    }
    fields.update(overrides)
    return ModelInfo(**fields)  # type: ignore[arg-type]


def check_memory(config: ModelConfig, weight_bytes: int, quantization: str, device: str) -> None:
    """Raise UnsupportedModel, before anything is allocated, when the weights as they will be held
    (`weight_bytes`: quantized or dequantized) plus a minimal KV cache would not fit in the device's
    free memory."""
    itemsize = TORCH_DTYPES[config.dtype].itemsize
    kv = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * itemsize * MIN_KV_TOKENS
    need = weight_bytes + kv
    if device.startswith("cuda"):
        free = cuda_free_bytes(device)
    else:
        import psutil

        free = psutil.virtual_memory().available
    if need > free:
        held = {"gguf": "kept quantized", "int4": "4-bit ones repacked to int4"}.get(
            quantization, f"dequantized to {config.dtype}")
        raise UnsupportedModel(
            f"model needs {need / 2**30:.1f} GiB ({weight_bytes / 2**30:.2f} GiB of weights {held} + a "
            f"{MIN_KV_TOKENS}-token KV cache) but only {free / 2**30:.1f} GiB is free on {device}"
        )


def _dequantize(f: GGUFFile, info: TensorInfo, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """float32 (or the file's float type) tensor of `info`, in torch (rows, cols) order. The types
    with a torch dequantizer come out in `dtype` directly (no float32 copy of the whole tensor)."""
    return dequantize_bytes(map_bytes(f, info), info, dtype)


def iter_weights(path: Path, config: ModelConfig, quantized_device: str | None = None, int4: bool = False,
                 workers: int | None = None, table: TensorTable | None = None,
                 ) -> Iterator[tuple[str, torch.Tensor | QuantizedWeight | Int4Weight]]:
    """Yield (hf_name, tensor) for every tensor of the GGUF file, dequantized into config.dtype; with
    `quantized_device`, the quantized matrices come as QuantizedWeight planes already on that device;
    with `int4`, the 4-bit matrices come as Int4Weight (CPU).
    On the CPU the tensors are computed on `workers` threads (default: chunk_pool.default_workers(); weight_jobs.py),
    in the file's order; the planes copied to a device, one after another.
    The file was validated by gguf_source (read_config), so it is not checked again here; with `table` (that parse's
    tensor table) its header is not parsed again either."""
    target = TORCH_DTYPES[config.dtype]
    with GGUFFile(path, table) as f:
        infos = [t for t in f.tensors.values() if t.name not in _SKIPPED]
        quantization = "gguf" if quantized_device else "int4" if int4 else "none"
        total = resident_weight_bytes(infos, quantization, target.itemsize)
        logger.info("loading %s: %d tensors, %.2f GiB of weights (%s)", path.name, len(infos), total / 2**30,
                    {"gguf": "kept quantized", "int4": "CPU int4"}.get(quantization, config.dtype))
        jobs = (job for info in infos
                for job in weight_jobs(f, info, hf_name(info.name), config, target, quantized_device, int4))
        yield from run_jobs(jobs, 1 if quantized_device else workers or default_workers())


def default_dtype(device: str) -> str:
    """Dequantized weights: bfloat16 on GPUs and on CPUs with bfloat16 in hardware (half the memory of
    float32, and faster there), else float32."""
    from velollm.hw.cpu_features import default_cpu_dtype

    return "bfloat16" if device.startswith("cuda") else default_cpu_dtype()


def gguf_source(path: str | Path, *, name: str | None = None, dtype: str | None = None,
                device: str | None = None, quantization: str | None = None, **info_overrides: object) -> ModelSource:
    """Resolve a GGUF file: validate it, check memory, and return its lazy ModelSource.
    `quantization`: auto | none | gguf (gguf_quantized.resolve_quantization).

    The header is parsed once, here: the tokenizer is built from this parse's metadata, and iter_weights maps the
    file again for its tensors with this parse's tensor table (ModelLoadError if the file changed in between)."""
    path = Path(path)
    device = device or default_device()
    from velollm.engine.loader.gguf_tokenizer import check_tokenizer_supported

    with GGUFFile(path) as f:
        config = read_config(f, dtype or default_dtype(device))
        check_tokenizer_supported(f.metadata, str(path))
        info = model_info(f, name or path.name, **info_overrides)
        metadata, table = f.metadata, f.table
        quantization = resolve_quantization(quantization, device, config.dtype)
        weight_bytes = resident_weight_bytes((t for t in f.tensors.values() if t.name not in _SKIPPED),
                                             quantization, TORCH_DTYPES[config.dtype].itemsize)
    check_memory(config, weight_bytes, quantization, device)
    quantized_device = device if quantization == "gguf" else None
    return ModelSource(
        config=config,
        info=info,
        load_tokenizer=_tokenizer_loader(path, metadata, info_overrides.get("template")),  # type: ignore[arg-type]
        iter_weights=lambda: iter_weights(path, config, quantized_device, quantization == "int4", table=table),
        path=path,
        quantization=quantization,
        weight_bytes=weight_bytes,
    )


def _tokenizer_loader(path: Path, metadata: dict, template_layer: str | None = None) -> Callable[[], Tokenizer]:
    """load_tokenizer for gguf_source: the first call builds from the metadata already parsed (and
    checked), then lets it go, as a vocabulary is tens of MB and sources are kept (SourceView);
    any later call reads the file again. A store model's TEMPLATE layer rides along (`go_template`; which template
    renders what: engine/text/template_layer.py)."""
    held = [metadata]

    def load() -> Tokenizer:
        from velollm.engine.loader.gguf_tokenizer import build_tokenizer, tokenizer_from_gguf

        try:
            tokenizer = build_tokenizer(held.pop())
        except IndexError:
            tokenizer = tokenizer_from_gguf(path)
        if template_layer:
            tokenizer.go_template = template_layer
        return tokenizer

    return load
