"""Where the engine runs and in what dtype: `auto` settled against the machine and the checkpoint."""

from __future__ import annotations

import contextlib

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


def device_scope(device: torch.device) -> contextlib.AbstractContextManager:
    """`device` made the thread's current CUDA device for what runs inside: Triton launches on the current
    device and its stream, not their tensors' (triton.runtime.jit), and CUDA graphs capture and replay on the
    current device's streams, so an engine on cuda:N (N > 0) would run its kernels on device 0. A no-op on the
    CPU and for a plain "cuda" (the current device already)."""
    if device.type == "cuda" and device.index is not None:
        return torch.cuda.device(device)
    return contextlib.nullcontext()
