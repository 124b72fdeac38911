"""Measured memory bandwidth: the ceiling of batch-1 decode, which reads every weight once per token."""

from __future__ import annotations

import time

import torch


def copy_bandwidth(device: str | torch.device, num_bytes: int | None = None, repeats: int = 10) -> float:
    """Bytes per second of a device-to-device copy, counting bytes read and written (2 GiB buffers on
    CUDA, 512 MiB on CPU by default: far past the caches)."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    num_bytes = num_bytes or ((2 << 30) if cuda else (512 << 20))
    x = torch.empty(num_bytes // dtype.itemsize, dtype=dtype, device=device).normal_()
    y = torch.empty_like(x)
    for _ in range(2):
        y.copy_(x)
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        y.copy_(x)
    _sync(device)
    return 2 * x.numel() * x.element_size() * repeats / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
