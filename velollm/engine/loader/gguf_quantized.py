"""GGUF weights kept quantized: which tensors stay in their blocks, their planes, the resident size.

`--quantization auto` keeps a GGUF file quantized on CUDA (the Triton kernels compute in place) and
dequantizes at load on the CPU, where the torch reference would dequantize every weight on every step;
`gguf` forces the quantized path anywhere (the CPU runs the torch reference: tests, comparisons);
`none` dequantizes at load everywhere, as before.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch

from velollm.config import QUANTIZATIONS
from velollm.engine.loader.gguf_file import GGUFFile, TensorInfo
from velollm.kernels.gguf_planes import QUANT_TYPES, QuantizedWeight, split_planes

def resolve_quantization(requested: str | None, device: str) -> str:
    """"gguf" (weights stay quantized) or "none" (dequantized at load) for a GGUF model on `device`."""
    requested = requested or "auto"
    if requested not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {requested!r}")
    if requested != "auto":
        return requested
    from velollm.kernels import HAS_TRITON

    return "gguf" if device.startswith("cuda") and HAS_TRITON else "none"


def stays_quantized(info: TensorInfo) -> bool:
    """A matrix of a type the kernels compute on (vectors and float tensors are loaded as floats)."""
    return len(info.shape) == 2 and info.type_name in QUANT_TYPES


def quantized_tensor(f: GGUFFile, info: TensorInfo, device: str) -> QuantizedWeight:
    """The tensor's blocks copied once to `device` (straight from the map) and split into planes there."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # from_numpy of a read-only map view; never written
        raw = torch.from_numpy(f.raw(info))
    return split_planes(raw.to(device), info.type_name, info.shape)  # type: ignore[arg-type]


def resident_weight_bytes(infos: Iterable[TensorInfo], quantization: str, itemsize: int) -> int:
    """Bytes the weights take once loaded: quantized matrices at their file size, everything else (and
    everything, when dequantized) at `itemsize` bytes per element."""
    total = 0
    for info in infos:
        keep = quantization == "gguf" and stays_quantized(info)
        total += info.nbytes if keep else info.num_elements * itemsize
    return total
