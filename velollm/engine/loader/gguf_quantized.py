"""GGUF weights kept quantized: which tensors stay in their blocks, their planes, the resident size.

`--quantization auto` keeps a GGUF file quantized on CUDA (the Triton kernels compute in place); on
the CPU it resolves to "int4" when the model computes in bfloat16 or float32 and torch has its CPU int4
kernels: the Q4_0 / Q4_1 / Q4_K matrices are repacked into torch's int4 layout (velollm.kernels.int4_cpu;
batch-1 decode about 2.5x the bfloat16 path, benchmarks/cpu_quantized.py) and every other tensor is
dequantized at load. A float32 model (CPUs without bfloat16 in hardware) gains the most: its dequantized
weights take 4 bytes each against 0.625, so a Q4_K_M 8B goes from 32.1 GB to 12.0 (benchmarks/resident_size.py).
`gguf` forces the GGUF planes anywhere (the CPU runs the torch reference: tests, comparisons);
`none` dequantizes at load everywhere, as before.

The rest stays in the model's dtype, float32 included, though a Q4_K_M file's Q6_K tensors (tied embedding, half
the ffn_down and attn_v) are then 1.6 of the 2.2 GB a Llama-3.2-1B holds in float32. torch has no CPU kernel that
takes Q6_K's scale per 16 elements (the int4 one groups 32 and more, `_weight_int8pack_mm` one scale per row), so
the smaller form left is a 16-bit copy (x rounded to it, as the int4 kernel rounds x to bfloat16). On 2 shared AVX2
EPYC cores it is not clearly faster: benchmarks/cpu_half_weights.py (benchmarks/data/cpu_half_weights_avx2.jsonl),
float32 step over 16-bit step of the same round, medians of 32, five runs at load 1-6 on two threads: bfloat16
0.96-1.19x, float16 1.01-1.29x (1.06x / 1.08x on one thread), the best steps 4.5-4.8 -> 5.9-6.9 tok/s. torch's
16-bit GEMV converts every weight (one core: about the float32 GEMV's time per weight), and on two threads it waits
for the second core on each call (attn_v 512x2048: 3-18 ms against MKL float32's 0.2-0.5 ms on one). float16 would
also need x scaled into its range (65504). Not taken; a Q6_K CPU kernel would read 0.82 bytes per weight.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch

from velollm.config import QUANTIZATIONS
from velollm.engine.loader.gguf_file import GGUFFile, TensorInfo
from velollm.kernels import int4_cpu
from velollm.kernels.gguf_planes import QUANT_TYPES, QuantizedWeight, split_planes
from velollm.kernels.int4_cpu import Int4Weight


def resolve_quantization(requested: str | None, device: str, dtype: str = "bfloat16") -> str:
    """"gguf" (weights stay quantized), "int4" (the CPU's 4-bit matrices repacked, the rest dequantized)
    or "none" (dequantized at load) for a GGUF model computing in `dtype` on `device`."""
    requested = requested or "auto"
    if requested not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {requested!r}")
    if requested != "auto":
        return requested
    from velollm.kernels import HAS_TRITON

    if device.startswith("cuda"):
        return "gguf" if HAS_TRITON else "none"
    return "int4" if dtype in ("bfloat16", "float32") and int4_cpu.available() else "none"


def stays_quantized(info: TensorInfo) -> bool:
    """A matrix of a type the kernels compute on (vectors and float tensors are loaded as floats)."""
    return len(info.shape) == 2 and info.type_name in QUANT_TYPES


def stays_int4(info: TensorInfo) -> bool:
    """A matrix the CPU int4 path computes on. The token embedding is looked up by rows, so it is
    dequantized (and a tied lm_head shares it)."""
    return info.name != "token_embd.weight" and int4_cpu.fits(info.type_name, info.shape)


def map_bytes(f: GGUFFile, info: TensorInfo) -> torch.Tensor:
    """The tensor's bytes as a uint8 tensor viewing the map (no copy). A threaded load (weight_jobs.py) makes it on
    its own thread, never on a worker: catch_warnings swaps the process-wide filter list, and blocks interleaved
    on several threads leave one's filter behind (every UserWarning ignored after the load)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # from_numpy of a read-only map view; never written
        return torch.from_numpy(f.raw(info))


def int4_tensor(raw: torch.Tensor, info: TensorInfo, rows: torch.Tensor | None = None) -> Int4Weight:
    """The tensor's blocks (`raw`, its bytes: map_bytes; its rows `rows` first: the Q/K permutation) repacked for
    the CPU int4 kernel."""
    blocks = raw.reshape(info.shape[0], -1)
    if rows is not None:
        blocks = blocks.index_select(0, rows)
    return int4_cpu.repack(blocks, info.type_name, info.shape)  # type: ignore[arg-type]


def quantized_tensor(f: GGUFFile, info: TensorInfo, device: str) -> QuantizedWeight:
    """The tensor's blocks copied once to `device` (straight from the map) and split into planes there."""
    return split_planes(map_bytes(f, info).to(device), info.type_name, info.shape)  # type: ignore[arg-type]


def resident_weight_bytes(infos: Iterable[TensorInfo], quantization: str, itemsize: int) -> int:
    """Bytes the weights take once loaded: quantized matrices at their file size (int4: 5/8 byte per
    element, bfloat16 scale and zero per 32), everything else (and everything, when dequantized) at
    `itemsize` bytes per element."""
    total = 0
    for info in infos:
        if quantization == "gguf" and stays_quantized(info):
            total += info.nbytes
        elif quantization == "int4" and stays_int4(info):
            total += info.num_elements // 2 + info.num_elements // int4_cpu.GROUP * 4
        else:
            total += info.num_elements * itemsize
    return total
