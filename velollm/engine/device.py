"""Where the engine runs and in what dtype: `auto` settled against the machine and the checkpoint."""

from __future__ import annotations

import torch

from velollm.engine.loader.source import default_device


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device(default_device())
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return torch.device(device)


def resolve_dtype(requested: str, config_dtype: str, device: torch.device) -> str:
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "float16" if config_dtype == "float16" else "bfloat16"
    if config_dtype == "float16":  # float16 matmuls are slow on CPUs (emulated past batch 1)
        from velollm.hw.cpu_features import default_cpu_dtype

        return default_cpu_dtype()
    return config_dtype  # a bfloat16 or float32 checkpoint runs as stored
