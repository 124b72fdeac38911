"""Frozen configuration dataclasses. The CLI and the server build them; components take what they use."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from velollm.errors import UnsupportedModel

DTYPES = ("float32", "bfloat16", "float16")
# GGUF weights: auto (kept quantized on CUDA; on a bfloat16 or float32 CPU model the 4-bit matrices repacked to int4,
# the rest dequantized at load) | none (dequantized) | gguf (kept quantized)
QUANTIZATIONS = ("auto", "none", "gguf")
# KV cache storage: auto (the model's dtype) | fp8 (float8 e4m3, half the bytes; velollm/kernels/fp8.py)
KV_CACHE_DTYPES = ("auto", "fp8")
KV_CACHE_DTYPE_ALIASES = {"fp8_e4m3": "fp8"}
_DTYPE_ALIASES = {"float": "float32", "fp32": "float32", "half": "float16", "fp16": "float16", "bf16": "bfloat16"}

# config.json `architectures` -> our model_type. Anything else is UnsupportedModel.
SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
}


def normalize_dtype(name: str | None) -> str | None:
    if name is None:
        return None
    name = str(name).removeprefix("torch.")
    name = _DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {name!r}")
    return name


def normalize_kv_cache_dtype(name: str) -> str:
    """auto | fp8 (fp8_e4m3 is an alias, as in vLLM); ValueError for anything else."""
    name = KV_CACHE_DTYPE_ALIASES.get(name, name)
    if name not in KV_CACHE_DTYPES:
        raise ValueError(f"kv_cache_dtype must be one of {(*KV_CACHE_DTYPES, *KV_CACHE_DTYPE_ALIASES)}, got {name!r}")
    return name


@dataclass(frozen=True)
class RopeScaling:
    """Normalised `rope_scaling` / `rope_parameters`. Only `llama3` (and none) change frequencies."""

    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True)
class ModelConfig:
    """What a model needs to be built: shapes, norms, rope. Read from HF config.json or GGUF metadata."""

    architecture: str
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    qk_norm: bool = False
    dtype: str = "float32"
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any], dtype: str | None = None) -> ModelConfig:
        """Build from a config.json dict; reads both transformers 4 and 5 key generations."""
        archs = cfg.get("architectures") or []
        arch = next((a for a in archs if a in SUPPORTED_ARCHITECTURES), None)
        if arch is None:
            raise UnsupportedModel(f"unsupported architecture {archs or cfg.get('model_type')!r}; "
                                   f"VeloLLM runs {sorted(SUPPORTED_ARCHITECTURES)}")
        model_type = SUPPORTED_ARCHITECTURES[arch]
        text = cfg.get("text_config") or cfg
        rope_params = dict(text.get("rope_parameters") or {})
        rope_scaling = text.get("rope_scaling") or (rope_params if rope_params.get("rope_type") not in (None, "default") else None)
        rope_theta = text.get("rope_theta", rope_params.get("rope_theta", 10000.0))
        num_heads = int(text["num_attention_heads"])
        hidden = int(text["hidden_size"])
        eos = text.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if eos is not None else ())
        config_dtype = normalize_dtype(text.get("dtype") or text.get("torch_dtype") or "float32")
        return cls(
            architecture=arch,
            model_type=model_type,
            vocab_size=int(text["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(text["intermediate_size"]),
            num_hidden_layers=int(text["num_hidden_layers"]),
            num_attention_heads=num_heads,
            num_key_value_heads=int(text.get("num_key_value_heads") or num_heads),
            head_dim=int(text.get("head_dim") or hidden // num_heads),
            max_position_embeddings=int(text.get("max_position_embeddings", 2048)),
            rms_norm_eps=float(text.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope_theta),
            rope_scaling=parse_rope_scaling(rope_scaling),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
            attention_bias=model_type == "qwen2" or bool(text.get("attention_bias", False)),
            qk_norm=model_type == "qwen3",
            dtype=normalize_dtype(dtype) or config_dtype,
            bos_token_id=text.get("bos_token_id"),
            eos_token_ids=eos_ids,
        )


def parse_rope_scaling(raw: dict[str, Any] | None) -> RopeScaling | None:
    if not raw:
        return None
    rope_type = raw.get("rope_type") or raw.get("type") or "default"
    if rope_type == "default":
        return None
    if rope_type != "llama3":
        raise UnsupportedModel(f"unsupported rope_scaling type {rope_type!r}; VeloLLM supports 'llama3'")
    return RopeScaling(
        rope_type="llama3",
        factor=float(raw.get("factor", 8.0)),
        low_freq_factor=float(raw.get("low_freq_factor", 1.0)),
        high_freq_factor=float(raw.get("high_freq_factor", 4.0)),
        original_max_position_embeddings=int(raw.get("original_max_position_embeddings", 8192)),
    )


@dataclass(frozen=True)
class CacheConfig:
    """Paged KV cache: block size and how much memory it may take."""

    block_size: int = 16
    kv_cache_memory: int | None = None  # bytes; CPU budget (default below), GPU: from free memory
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool = True
    kv_cache_dtype: str = "auto"  # auto: the model's dtype; fp8: float8 e4m3 (falls back below sm_89, see runner)

    DEFAULT_CPU_KV_BYTES = 2 * 1024**3

    def __post_init__(self) -> None:
        object.__setattr__(self, "kv_cache_dtype", normalize_kv_cache_dtype(self.kv_cache_dtype))
        if self.block_size < 1:
            raise ValueError("block_size must be >= 1")
        if self.kv_cache_memory is not None and self.kv_cache_memory <= 0:
            raise ValueError("kv_cache_memory must be positive")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")


@dataclass(frozen=True)
class SchedulerConfig:
    """Continuous batching limits."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    max_model_len: int = 4096

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "max_model_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


PREFILL_ATTENTION_ENV = "VELOLLM_PREFILL_ATTENTION"
PREFILL_PATHS = ("auto", "varlen", "paged")
DECODE_FUSED_REDUCE_ENV = "VELOLLM_DECODE_FUSED_REDUCE"
SILU_DOWN_GEMV_ENV = "VELOLLM_SILU_DOWN_GEMV"
_SWITCH_VALUES = ("0", "1")


@dataclass(frozen=True)
class KernelSwitches:
    """Which kernels the model's forward takes where there is a choice (velollm.kernels documents each):

    `prefill_attention` ($VELOLLM_PREFILL_ATTENTION): auto | varlen | paged, for prefill steps without a
    cached prefix; `decode_fused_reduce` ($VELOLLM_DECODE_FUSED_REDUCE=0|1) and `silu_down_gemv`
    ($VELOLLM_SILU_DOWN_GEMV=0|1), two batch-1 decode fusions off until a GPU run shows them faster.
    Read once (`from_env`) where an engine is configured, so a bad value stops `velollm serve` or `LLM()`
    at start instead of failing requests, and no forward pass reads the environment."""

    prefill_attention: str = "auto"
    decode_fused_reduce: bool = False
    silu_down_gemv: bool = False

    def __post_init__(self) -> None:
        if self.prefill_attention not in PREFILL_PATHS:
            raise ValueError(f"prefill_attention must be one of {', '.join(PREFILL_PATHS)}, "
                             f"not {self.prefill_attention!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KernelSwitches:
        """The switches $VELOLLM_PREFILL_ATTENTION, $VELOLLM_DECODE_FUSED_REDUCE and $VELOLLM_SILU_DOWN_GEMV
        set (unset or empty: the default); ValueError naming the variable and its values for anything else."""
        env = os.environ if environ is None else environ
        return cls(prefill_attention=_env_choice(env, PREFILL_ATTENTION_ENV, PREFILL_PATHS),
                   decode_fused_reduce=_env_choice(env, DECODE_FUSED_REDUCE_ENV, _SWITCH_VALUES) == "1",
                   silu_down_gemv=_env_choice(env, SILU_DOWN_GEMV_ENV, _SWITCH_VALUES) == "1")


def _env_choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    """$name, one of `allowed` (the first when unset or empty)."""
    value = env.get(name, "").strip() or allowed[0]
    if value not in allowed:
        raise ValueError(f"${name} must be one of {', '.join(allowed)} (unset: {allowed[0]}), not {value!r}")
    return value


DEVICES = ("auto", "cpu", "cuda")
ENGINE_DTYPES = ("auto", *DTYPES)


@dataclass(frozen=True)
class EngineConfig:
    """How one engine runs: built once at the edge (`velollm serve`, `LLM()`, the CLI commands) and
    passed down whole; the engine hands each component its part (CacheConfig, SchedulerConfig)."""

    device: str = "auto"  # auto, cpu, cuda or cuda:N
    dtype: str = "auto"  # auto: the checkpoint's (bfloat16 for float16 checkpoints on CPUs that have it)
    max_num_seqs: int = 256  # requests batched at once
    max_model_len: int | None = None  # context length; None: the model's (lowered to what the KV cache holds)
    max_num_batched_tokens: int | None = None  # tokens per step; None: see `batched_tokens`
    kv_cache_memory: int | None = None  # bytes of KV cache; None: CacheConfig's CPU default, or from free GPU memory
    enable_prefix_caching: bool = True
    gpu_memory_utilization: float = 0.9  # share of GPU memory for weights, activations and the KV cache
    enforce_eager: bool = False  # no CUDA graphs for decode steps
    # Schedule step N+1 while step N runs; its sampled ids reach N+1's inputs on the device (LLMEngine.step)
    async_scheduling: bool = False
    max_queue: int = 512  # waiting requests of an AsyncEngine before Overloaded (503; Ollama's default)
    quantization: str = "auto"  # GGUF weights: auto (quantized on CUDA, int4 on a CPU), none (dequantized), gguf
    kv_cache_dtype: str = "auto"  # auto: the model's dtype; fp8 (alias fp8_e4m3): float8 e4m3, half the bytes
    # Kernel choices ($VELOLLM_PREFILL_ATTENTION, ...); None: read from the environment when the engine is built
    kernel_switches: KernelSwitches | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kv_cache_dtype", normalize_kv_cache_dtype(self.kv_cache_dtype))
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be one of {DEVICES} or cuda:N, got {self.device!r}")
        if self.dtype not in ENGINE_DTYPES:
            raise ValueError(f"dtype must be one of {ENGINE_DTYPES}, got {self.dtype!r}")
        for name in ("max_num_seqs", "max_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_model_len", "max_num_batched_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.kv_cache_memory is not None and self.kv_cache_memory <= 0:
            raise ValueError(f"kv_cache_memory must be positive, got {self.kv_cache_memory}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {self.quantization!r}")

    def batched_tokens(self, max_model_len: int) -> int:
        """Tokens per step (also the activation size profiled before sizing the KV cache): the flag,
        else the context length clamped to [2048, 8192]."""
        return self.max_num_batched_tokens or max(2048, min(max_model_len, 8192))

    def cache_config(self) -> CacheConfig:
        return CacheConfig(kv_cache_memory=self.kv_cache_memory, enable_prefix_caching=self.enable_prefix_caching,
                           gpu_memory_utilization=self.gpu_memory_utilization, kv_cache_dtype=self.kv_cache_dtype)

    def replace(self, **changes: Any) -> EngineConfig:
        return dataclasses.replace(self, **changes)


_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from "512MiB", "2G", "1.5GB" or a plain number (binary units either way)."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512MiB, 2GiB, 1073741824)")
    scale = 1024 ** " kmgt".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * scale)
