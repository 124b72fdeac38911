"""The CPU int4 layout (velollm.kernels.int4_cpu) dequantized back to the model's dtype, for prefill.

torch's `_weight_int4pack_mm_for_cpu` dequantizes every weight again for each block of 4 rows of x, so
at prefill sizes it runs at a fraction of the bfloat16 GEMM (benchmarks/int4_prefill.py). Dequantizing
the matrix once per call into a reused buffer and running the bfloat16 GEMM is faster from about a
hundred rows on (int4_cpu.prefill_rows); the buffer is one per model, sized to its largest int4 matrix, not a
dense copy per layer (which is what the int4 path saves). It holds bfloat16 for a bfloat16 model and float32 for a
float32 one (a CPU without bfloat16 in hardware, where the float32 GEMM is the fast one).

The values are the kernel's own: with AVX-512 it computes each weight as fma(q - 8, scale, zero) in float32
((q - 8) * scale is exact there, so one rounding) and multiplies in float32; we round that float32 weight
to bfloat16 (round to nearest even, as the kernel rounds its output). So `dequantize_t(w)` equals, bit for
bit, what the kernel returns for x = identity, which `supported()` checks on a probe once per process:
a packing other than the one described (other torch versions) fails the probe and keeps the int4 kernel.
In float32 the weights are the kernel's before that rounding (the same one rounding of fma(q - 8, scale, zero)).

Layout (aten/src/ATen/native/cpu/int4mm_kernel.cpp, weight_to_int4pack_kernel): rows come in blocks of 64
with AVX-512, 32 with AVX2 (int4_cpu._pack_rows finds which), each stored k-major as [K, block / 2] bytes;
byte d of a k holds row d (low nibble) and row d + block / 2 (high nibble). A last block of fewer rows (a
multiple of 16) is [K, rows / 2] bytes, byte j holding rows 2j and 2j + 1.
The nibbles are split eight bytes at a time as int64 words into signed int8 (q - 8), converted to bfloat16
(exact) and put through one addcmul with the scales and zeros (float32 inside, one rounding) into W^T [K, N]
(the GEMM takes it transposed at no cost).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

import torch

if TYPE_CHECKING:
    from velollm.kernels.int4_cpu import Int4Weight

GROUP = 32  # elements of k sharing one scale and zero
_LOW = 0x0F0F0F0F0F0F0F0F
_SIGN = 0x0808080808080808
_FLIP = 0x8888888888888888 - (1 << 64)  # q ^ 8 read as a signed nibble is q - 8
# Weights per chunk: its int8 quants and bfloat16 values stay in cache (2^18..2^22 measured alike).
_CHUNK_ELEMENTS = 1 << 22
# The dequantization's ~10 elementwise ops per chunk run on one torch thread. Each parallel op ends in a barrier
# that waits for every thread; on a box whose cores other jobs share, a thread on a busy core costs a
# scheduler slice (~15 ms) per op. Measured on 2 shared EPYC cores, 4096x4096, load 4.5-7, medians: 2 threads
# 250-1000 ms, 1 thread 27-95 ms; the fastest runs seen: 2 threads 10 ms, 1 thread 20 ms.
# Not by torch.set_num_threads around the ops on the caller's thread: that also sets the process-wide count a
# thread reads at its first parallel op, so a thread starting meanwhile (a model loaded on demand during a CPU
# prefill) would run on one thread for good. A worker thread of the scratch's own runs them instead.
_T = TypeVar("_T")


class Int4Scratch:
    """One buffer for dequantized weights (bfloat16 or float32: the model's dtype), grown to the largest matrix
    asked for, and the thread that dequantizes into it.

    Owned by one model (velollm.engine.models.quantized_linear), whose forward passes run one at a time.
    `thread_init` starts that worker thread (velollm.hw.torch_threads.one_intra_op_thread(): one torch thread, the
    process's count untouched); None: the dequantization runs on the caller's thread, at its own count.
    """

    def __init__(self, thread_init: Callable[[], None] | None = None, dtype: torch.dtype = torch.bfloat16) -> None:
        if dtype not in (torch.bfloat16, torch.float32):
            raise ValueError(f"an int4 scratch holds bfloat16 or float32, not {dtype}")
        self.dtype = dtype
        self.buffer = torch.empty(0, dtype=dtype)
        self.thread_init = thread_init
        self._worker: ThreadPoolExecutor | None = None

    def run(self, fn: Callable[..., _T], *args: object) -> _T:
        """fn(*args) on the worker thread (started at the first call; it ends with the scratch), in inference
        mode as the forward pass that calls it (the mode is per thread), and its result; or on this thread."""
        if self.thread_init is None:
            return fn(*args)
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, "velollm-int4-unpack", initializer=self.thread_init)
            weakref.finalize(self, self._worker.shutdown, wait=False)
        return self._worker.submit(_inference, fn, *args).result()

    def take(self, numel: int) -> torch.Tensor:
        if self.buffer.numel() < numel:
            self.buffer = torch.empty(0, dtype=self.dtype)  # free the old one first
            self.buffer = torch.empty(numel, dtype=self.dtype)
        return self.buffer[:numel]

    @property
    def nbytes(self) -> int:
        return self.buffer.numel() * self.buffer.element_size()


def _signed_nibbles(words: torch.Tensor, shift: int, out: torch.Tensor) -> torch.Tensor:
    """The low (shift 0) or high (shift 4) nibble of each byte of `words` (already ^ 0x88), sign-extended:
    each byte of `out` becomes q - 8 as int8. Bit 3 times 0x1E is 0xF0, with no carry out of the byte."""
    if shift:
        torch.bitwise_right_shift(words, shift, out=out)
        out.bitwise_and_(_LOW)
    else:
        torch.bitwise_and(words, _LOW, out=out)
    return out.bitwise_or_(torch.bitwise_and(out, _SIGN).mul_(0x1E)).view(torch.int8)


def _full_blocks(packed: torch.Tensor, sz: torch.Tensor, out: torch.Tensor, cols: int, block: int) -> None:
    """Whole blocks of `block` rows: packed uint8 [NB * K * block / 2], sz [K/32, NB * block, 2] -> out [K, NB * block]
    (a view). A few blocks at a time, so that every pass but the last stays in cache and runs over contiguous memory."""
    groups, nb = cols // GROUP, sz.shape[1] // block
    half = block // 2
    words = packed.view(torch.int64).view(nb, cols * half // 8)
    step = max(1, _CHUNK_ELEMENTS // (cols * block))
    flipped = torch.empty(step, cols * half // 8, dtype=torch.int64)
    nibbles = torch.empty_like(flipped)
    values = torch.empty(step, groups, GROUP, half, dtype=out.dtype)
    target = out.view(groups, GROUP, nb, 2, half)
    scale, zero = (sz[..., i].reshape(groups, 1, nb, 2, half).to(out.dtype).contiguous() for i in (0, 1))
    for b in range(0, nb, step):
        n = min(step, nb - b)
        f = torch.bitwise_xor(words[b:b + n], _FLIP, out=flipped[:n])
        for h, shift in enumerate((0, 4)):  # rows d of each block, then rows d + block / 2
            v = values[:n].copy_(_signed_nibbles(f, shift, nibbles[:n]).view(n, groups, GROUP, half))
            torch.addcmul(zero[:, :, b:b + n, h], v.permute(1, 2, 0, 3), scale[:, :, b:b + n, h],
                          out=target[:, :, b:b + n, h])


def _tail_block(packed: torch.Tensor, sz: torch.Tensor, out: torch.Tensor, cols: int) -> None:
    """A last block of fewer rows: packed [K, rows / 2] bytes, byte j = rows 2j (low), 2j + 1 (high)."""
    rows = sz.shape[1]
    b = packed.view(cols, rows // 2)
    q = torch.stack([b & 0x0F, b >> 4], dim=2).view(cols, rows).float() - 8
    s = sz[..., 0].float().repeat_interleave(GROUP, 0)
    z = sz[..., 1].float().repeat_interleave(GROUP, 0)
    out.copy_(torch.addcmul(z, q, s))


def _block_rows() -> int | None:
    from velollm.kernels import int4_cpu

    return int4_cpu._pack_rows() if int4_cpu.available() else None


def dequantize_t(w: Int4Weight, scratch: Int4Scratch) -> torch.Tensor:
    """W^T [K, N] in the scratch's dtype, in its buffer (valid until its next use), computed on its thread."""
    block = _block_rows()
    if block is None:
        raise RuntimeError("this CPU's int4 packing is not one int4_unpack reads")
    rows, cols = w.shape
    full = rows // block * block
    out = scratch.take(rows * cols).view(cols, rows)
    flat = w.packed.view(-1)
    scratch.run(_unpack, flat, w.scales_and_zeros, out, full, block)
    return out


def _unpack(flat: torch.Tensor, sz: torch.Tensor, out: torch.Tensor, full: int, block: int) -> None:
    """The whole blocks of `block` rows, then the tail block if any, into out [K, N]."""
    cols, rows = out.shape
    if full:
        _full_blocks(flat[:full * cols // 2], sz[:, :full], out[:, :full], cols, block)
    if full < rows:
        _tail_block(flat[full * cols // 2:], sz[:, full:], out[:, full:], cols)


def _inference(fn: Callable[..., _T], *args: object) -> _T:
    with torch.inference_mode():
        return fn(*args)


@functools.lru_cache(maxsize=1)
def supported() -> bool:
    """Whether this torch on this CPU packs as described above: a probe of one full and one tail block
    must dequantize to exactly what the kernel computes for x = identity. (Whether the GEMM it feeds runs in
    hardware is the engine's to check: quantized_linear.quantize_linears gives a bfloat16 model no scratch
    where bfloat16 is emulated.)"""
    from velollm.kernels import int4_cpu

    block = _block_rows()
    if block is None:
        return False
    gen = torch.Generator().manual_seed(0)
    rows, cols = block + 16, 2 * GROUP
    q = torch.randint(0, 16, (rows, cols), generator=gen, dtype=torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    sz = torch.randn(cols // GROUP, rows, 2, generator=gen).to(torch.bfloat16)
    probe = int4_cpu.Int4Weight((rows, cols), packed, sz)
    eye = torch.eye(cols, dtype=torch.bfloat16)
    kernel = torch.ops.aten._weight_int4pack_mm_for_cpu(eye, packed, GROUP, sz)
    try:
        ours = dequantize_t(probe, Int4Scratch())
    except RuntimeError:
        return False
    return torch.equal(ours.view(torch.int16), kernel.view(torch.int16))
