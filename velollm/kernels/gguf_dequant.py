"""Vectorised torch dequantizers for the common GGML block types.

Ports of `gguf.quants`' numpy `dequantize_blocks` (the spec: block layouts of ggml-quants.c) to
torch ops over whole blocks. Every float32 operation is done in the same order as the numpy code,
so the results are bit-identical to `gguf.quants.dequantize`. The blocks are processed in chunks
whose float32 values are written in place into the output (or a reused scratch chunk that is then
cast into a bfloat16/float16 output), so besides a few cheap uint8 passes each element is written
about three times in cache; what remains is mostly the first touch of the output's pages.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

import numpy as np
import torch

QK_K = 256

# Elements per chunk: large enough that per-op overhead and the two-thread split amortise (measured
# best on a 2-core EPYC between 2^19 and 2^21), small enough that a reused float32 scratch stays cached.
_CHUNK_ELEMENTS = 1 << 20


def _f16(blocks: torch.Tensor, at: int) -> torch.Tensor:
    """The little-endian float16 at byte `at` of every block, as float32 of shape (n, 1): read in place where the
    blocks sit at even addresses (every type's block is an even number of bytes), in the one pass of the cast."""
    return _words(blocks[:, at:at + 2], torch.float16).float()


def _words(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bytes (n, k) viewed as (n, k / size) `dtype` words, in place when aligned to the word (else from a copy)."""
    size = dtype.itemsize
    if b.storage_offset() % size or b.stride(0) % size:
        b = b.contiguous()
    return b.view(dtype)


# byte -> its 8 bits as 8 bytes (bit 0 first), packed little-endian in one int64
_BIT_BYTES = (torch.arange(256).unsqueeze(1) >> torch.arange(8) & 1).to(torch.uint8).view(torch.int64).view(256)


def _nibbles(qs: torch.Tensor, groups: int, width: int) -> torch.Tensor:
    """(n, groups*width) bytes -> (n, groups*2, width): low nibbles of each group, then its high nibbles."""
    src = qs.reshape(qs.shape[0], groups, width)
    return torch.stack([src & 0x0F, src >> 4], dim=2).view(qs.shape[0], groups * 2, width)


def _bits(qh: torch.Tensor, width: int) -> torch.Tensor:
    """(n, width) bytes, width a multiple of 8 -> (n, 8, width): bit 0 of every byte, then bit 1, ...
    Shifted as int64 words, eight bytes at a time: the mask keeps each byte's own bit."""
    n = qh.shape[0]
    words = qh.clone(memory_format=torch.contiguous_format).view(torch.int64)  # 8-byte aligned
    fields = [(words >> i) & 0x0101010101010101 for i in range(8)]
    return torch.stack(fields, dim=1).view(torch.uint8).view(n, 8, width)


def _crumbs(qs: torch.Tensor, groups: int, width: int) -> torch.Tensor:
    """(n, groups*width) bytes -> (n, groups*4, width): 2-bit fields at shifts 0, 2, 4, 6."""
    src = qs.reshape(qs.shape[0], groups, width)
    fields = [src & 3, (src >> 2) & 3, (src >> 4) & 3, src >> 6]
    return torch.stack(fields, dim=2).view(qs.shape[0], groups * 4, width)


# Each kernel writes the float32 values of the blocks `b` (n, type_size) into `o` (n, block elements),
# in place, so that a chunk makes a few passes over cache-resident memory. Products are commutative
# and integer offsets are exact in float32, so the results match numpy's bit for bit.

def _q8_0(b: torch.Tensor, o: torch.Tensor) -> None:
    o.copy_(b[:, 2:].view(torch.int8)).mul_(_f16(b, 0))


def _q4_0(b: torch.Tensor, o: torch.Tensor) -> None:
    o.copy_(_nibbles(b[:, 2:], 1, 16).view(o.shape)).sub_(8).mul_(_f16(b, 0))


def _q4_1(b: torch.Tensor, o: torch.Tensor) -> None:
    o.copy_(_nibbles(b[:, 4:], 1, 16).view(o.shape)).mul_(_f16(b, 0)).add_(_f16(b, 2))


def _q5(b: torch.Tensor, at: int) -> torch.Tensor:
    """The 5-bit quants of Q5_0/Q5_1: 4 bytes of high bits (bit i -> element i) at `at`, then nibbles."""
    ql = _nibbles(b[:, at + 4:], 1, 16).view(b.shape[0], 32)
    qh = _BIT_BYTES[b[:, at:at + 4].long()].view(torch.uint8)
    return ql.bitwise_or_(qh << 4)


def _q5_0(b: torch.Tensor, o: torch.Tensor) -> None:
    o.copy_(_q5(b, 2)).sub_(16).mul_(_f16(b, 0))


def _q5_1(b: torch.Tensor, o: torch.Tensor) -> None:
    o.copy_(_q5(b, 4)).mul_(_f16(b, 0)).add_(_f16(b, 2))


def _scale_min_k4(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K/Q5_K's 12 bytes of packed 6-bit (scale, min) pairs -> two (n, 8) uint8 tensors. Bytewise masks and shifts
    on the three little-endian int32 words of each block (the masks drop what a shift carries across bytes): a few
    passes over n words rather than many over (n, 4) strided bytes."""
    if sys.byteorder == "little":
        n = scales.shape[0]
        d, m, m_d = _words(scales, torch.int32).unbind(1)
        sc = torch.stack([d & 0x3F3F3F3F, (m_d & 0x0F0F0F0F) | ((d >> 2) & 0x30303030)], dim=1)
        mn = torch.stack([m & 0x3F3F3F3F, ((m_d >> 4) & 0x0F0F0F0F) | ((m >> 2) & 0x30303030)], dim=1)
        return sc.view(torch.uint8).view(n, 8), mn.view(torch.uint8).view(n, 8)
    s = scales.reshape(scales.shape[0], 3, 4)
    d, m, m_d = s[:, 0], s[:, 1], s[:, 2]
    sc = torch.cat([d & 0x3F, (m_d & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mn = torch.cat([m & 0x3F, (m_d >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return sc, mn


def _k4_scales(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = b.shape[0]
    sc, mn = _scale_min_k4(b[:, 4:16])
    d = (_f16(b, 0) * sc.float()).view(n, 8, 1)
    dm = (_f16(b, 2) * mn.float()).view(n, 8, 1)
    return d, dm


def _q4_k(b: torch.Tensor, o: torch.Tensor) -> None:
    d, dm = _k4_scales(b)
    o.view(-1, 8, 32).copy_(_nibbles(b[:, 16:], 4, 32)).mul_(d).sub_(dm)


def _q5_k(b: torch.Tensor, o: torch.Tensor) -> None:
    d, dm = _k4_scales(b)
    q = _nibbles(b[:, 48:], 4, 32).bitwise_or_(_bits(b[:, 16:48], 32) << 4)
    o.view(-1, 8, 32).copy_(q).mul_(d).sub_(dm)


def _q6_k(b: torch.Tensor, o: torch.Tensor) -> None:
    n = b.shape[0]
    d = (_f16(b, 208) * b[:, 192:208].view(torch.int8).float()).view(n, 16, 1)
    q = _nibbles(b[:, :128], 2, 64).view(n, 8, 32).bitwise_or_(_crumbs(b[:, 128:192], 2, 32) << 4)
    o.view(n, 16, 16).copy_(q.view(n, 16, 16)).sub_(32).mul_(d)


def _q2_k(b: torch.Tensor, o: torch.Tensor) -> None:
    n = b.shape[0]
    scales = b[:, :16]
    dl = (_f16(b, 80) * (scales & 0x0F).float()).view(n, 16, 1)
    ml = (_f16(b, 82) * (scales >> 4).float()).view(n, 16, 1)
    o.view(n, 16, 16).copy_(_crumbs(b[:, 16:80], 2, 32).view(n, 16, 16)).mul_(dl).sub_(ml)


def _q3_k(b: torch.Tensor, o: torch.Tensor) -> None:
    n = b.shape[0]
    low = _nibbles(b[:, 96:104], 1, 8).reshape(n, 16)
    high = _crumbs(b[:, 104:108], 1, 4).reshape(n, 16)
    sc = ((low | (high << 4)).view(torch.int8) - 32).float()
    dl = (_f16(b, 108) * sc).view(n, 16, 1)
    ql = _crumbs(b[:, 32:96], 2, 32).view(n, 16, 16)
    qh = _bits(b[:, :32], 32).view(n, 16, 16) ^ 1  # the offset is 0 where the mask bit is 1
    o.view(n, 16, 16).copy_(ql.view(torch.int8) - (qh << 2).view(torch.int8)).mul_(dl)


# type name -> (elements per block, bytes per block, block dequantizer)
_KERNELS: dict[str, tuple[int, int, Callable[[torch.Tensor, torch.Tensor], None]]] = {
    "Q8_0": (32, 34, _q8_0),
    "Q4_0": (32, 18, _q4_0),
    "Q4_1": (32, 20, _q4_1),
    "Q5_0": (32, 22, _q5_0),
    "Q5_1": (32, 24, _q5_1),
    "Q2_K": (QK_K, 84, _q2_k),
    "Q3_K": (QK_K, 110, _q3_k),
    "Q4_K": (QK_K, 144, _q4_k),
    "Q5_K": (QK_K, 176, _q5_k),
    "Q6_K": (QK_K, 210, _q6_k),
}
SUPPORTED_TYPES = frozenset(_KERNELS)


def block_size(type_name: str) -> tuple[int, int]:
    """(elements per block, bytes per block) of a type in SUPPORTED_TYPES."""
    block_elems, type_size, _ = _KERNELS[type_name]
    return block_elems, type_size


def dequantize(raw: np.ndarray | memoryview | torch.Tensor, type_name: str, shape: tuple[int, ...],
               dtype: torch.dtype = torch.float32, out: torch.Tensor | None = None) -> torch.Tensor:
    """The blocks in `raw` (uint8 bytes, e.g. a read-only view of the mapped file, or a CPU uint8
    tensor) as a fresh `dtype` tensor of `shape` (or written into `out`, a contiguous `dtype` tensor of
    as many elements: a slice of rows of a larger one); equal to `gguf.quants.dequantize` (then cast to
    `dtype`). Raises KeyError for a type outside SUPPORTED_TYPES and ValueError when the byte count
    does not match the shape."""
    block_elems, type_size, kernel = _KERNELS[type_name]
    numel = int(np.prod(shape)) if shape else 1
    n_blocks = numel // block_elems
    if isinstance(raw, torch.Tensor):
        flat = raw.reshape(-1)
    else:
        data = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, memoryview) else raw.view(np.uint8).reshape(-1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # from_numpy of a read-only map view; never written
            flat = torch.from_numpy(data)
    if numel % block_elems or flat.numel() != n_blocks * type_size:
        raise ValueError(f"{type_name}: {flat.numel()} bytes do not hold a tensor of shape {tuple(shape)}")
    blocks = flat.view(n_blocks, type_size)
    if out is None:
        out = torch.empty(n_blocks, block_elems, dtype=dtype)
    elif out.dtype != dtype or out.numel() != numel or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous {dtype} tensor of {numel} elements")
    out = out.view(n_blocks, block_elems)
    step = max(1, _CHUNK_ELEMENTS // block_elems)
    # float32 goes straight into the output; other dtypes through one reused float32 chunk
    scratch = None if dtype == torch.float32 else torch.empty(min(step, n_blocks), block_elems)
    for start in range(0, n_blocks, step):
        b = blocks[start:start + step]
        if scratch is None:
            kernel(b, out[start:start + step])
        else:
            kernel(b, scratch[:b.shape[0]])
            out[start:start + step] = scratch[:b.shape[0]]
    return out.reshape(shape)
