"""ModelSource: everything needed to build one model, whatever format it came in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from velollm.config import ModelConfig

if TYPE_CHECKING:
    from velollm.engine.text.tokenizer import Tokenizer

# config dtype names (velollm.config.DTYPES) -> torch dtypes, for the loaders and the model runner.
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_device() -> str:
    """The device "auto" means: the GPU when CUDA is available, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def cuda_free_bytes(device: str | torch.device) -> int:
    """Memory a load on CUDA `device` can take: the driver's free memory plus what torch's caching allocator
    holds without a tensor in it. An unloaded model's weights, a stopped load's (load_stop) or a released KV
    cache go back to that cache, not to the driver, so mem_get_info alone counts them as in use."""
    device = torch.device(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return torch.cuda.mem_get_info(device)[0] + cached


@dataclass(frozen=True)
class ModelInfo:
    """Facts about a model that /api/tags, /api/show and /api/ps report."""

    name: str
    format: str  # "safetensors" | "gguf"
    family: str  # "llama", "qwen2", ...
    parameter_count: int
    quantization_level: str  # "F32", "BF16", "Q4_K_M", ...
    size_bytes: int
    digest: str  # sha256 hex of the main weights file (or of the manifest), "" if unknown
    modified_at: float = 0.0  # unix time
    path: str = ""
    default_options: dict[str, Any] = field(default_factory=dict)  # Ollama params layer
    layer_error: str = ""  # why a params/messages layer is unusable: a chat on the model is a 400 saying so
    default_system: str | None = None  # Ollama system layer
    template: str | None = None  # Ollama template layer / chat template text
    license: str = ""  # Ollama license layers joined by newlines (as Ollama's show), else GGUF general.license
    licenses: tuple[str, ...] = ()  # Ollama license layers one by one: a LICENSE block each in the Modelfile
    default_messages: tuple[dict[str, str], ...] = ()  # Ollama messages layer: history before every chat


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: config, tokenizer factory, and a (hf_name, tensor) weight stream."""

    config: ModelConfig
    info: ModelInfo
    load_tokenizer: Callable[[], Tokenizer]
    iter_weights: Callable[[], Iterator[tuple[str, torch.Tensor]]]  # GGUF planes too when quantization="gguf"
    path: Path
    quantization: str = "none"  # "gguf": quantized matrices stream as QuantizedWeight planes; "int4": as CPU Int4Weight
    weight_bytes: int | None = None  # bytes the weights take once loaded; None: parameters x dtype size
