"""Quantized GEMV for decode: y [M, N] = x [M, K] @ W^T for a few rows M, W kept in GGUF planes.

Each program owns BLOCK_N weight rows and one split of K; it streams the qs plane in byte tiles and
multiplies by every activation row at once, so the weights are read once per step whatever M is.
Scales are applied per group of fields sharing them (A * sum(q * x) - B * sum(x)), so only the quants
are decoded element by element. float32 accumulation; split-K partials are summed in float32 (a
second small launch, deterministic, no atomics) when N alone gives too few programs to fill the GPU.

Dispatch (kernels.quantized_linear): this kernel for M <= MAX_ROWS, quant_gemm above. The bound is where
the [M, BLOCK_N, BLOCK_B] register tile of this kernel stops paying off against tensor cores;
benchmarks/quant_matmul.py sweeps M on the GPU and prints the crossover to confirm it.
"""

from __future__ import annotations

import functools

import torch

from velollm.kernels._triton import interpreter_tile, tl, triton
from velollm.kernels.gguf_planes import QuantizedWeight, quantized_matmul_ref
from velollm.kernels.gguf_tile import group_tile, linear_operands, load_group_tile, plane_args

MAX_ROWS = 8
_BLOCK_N = 8  # 16 spills registers for Q6_K at one row (sm_90, ptxas)
_PROGRAMS_PER_SM = 4

quant_gemv_ref = quantized_matmul_ref


@triton.jit
def _gemv_kernel(
    x_ptr, qs_ptr, qh_ptr, sc_ptr, d_ptr, out_ptr,
    M, N, row_bytes, bytes_per_split, x_stride, out_stride, split_stride,
    qs_stride, qh_stride, sc_stride, d_stride,
    QTYPE: tl.constexpr, QK: tl.constexpr, QS_BYTES: tl.constexpr, SHIFTS: tl.constexpr, GROUP: tl.constexpr,
    M_PAD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
):
    # A tile is [BLOCK_N rows, NG groups, GROUP bytes]: a group's fields at one shift step share the
    # scale A and min B, so each group takes one dot product: sum(w * x) = A * sum(q * x) - B * sum(x),
    # and per element only the quant is decoded (llama.cpp's MMVQ does the same per block).
    NG: tl.constexpr = BLOCK_B // GROUP
    split = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    rows2 = rows.to(tl.int64)[:, None]
    m = tl.arange(0, M_PAD)
    m_mask = m < M
    acc = tl.zeros([M_PAD, BLOCK_N], dtype=tl.float32)
    start = split * bytes_per_split
    end = tl.minimum(start + bytes_per_split, row_bytes)
    for off in range(start, end, BLOCK_B):
        q, pg, pb, p_mask, mask, g_mask = load_group_tile(qs_ptr, rows2, row_mask, qs_stride, off, end, NG, GROUP)
        for s in tl.static_range(SHIFTS):
            qv, a, bias, cols = group_tile(q, s, pg, pb, rows2, mask, g_mask, qh_ptr, sc_ptr, d_ptr, qh_stride,
                                           sc_stride, d_stride, QTYPE, QK, QS_BYTES)
            x = tl.load(x_ptr + m[:, None, None] * x_stride + cols[None, :, :],
                        mask=m_mask[:, None, None] & p_mask[None, :, :], other=0.0).to(tl.float32)
            dots = tl.sum(qv.to(tl.float32)[None, :, :, :] * x[:, None, :, :], axis=3)
            acc += tl.sum(dots * a[None, :, :] - tl.sum(x, axis=2)[:, None, :] * bias[None, :, :], axis=2)
    out = out_ptr + split * split_stride + m[:, None] * out_stride + rows[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & row_mask[None, :])


@functools.cache
def _num_sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _num_splits(num_row_tiles: int, num_byte_tiles: int, device: torch.device) -> int:
    """Enough programs to fill the GPU, each split keeping at least 4 byte tiles of work."""
    if device.type != "cuda":
        return 1
    wanted = -(-_PROGRAMS_PER_SM * _num_sms(device) // num_row_tiles)
    return max(1, min(wanted, num_byte_tiles // 4))


def quant_gemv_triton(x: torch.Tensor, w: QuantizedWeight, *, out: torch.Tensor | None = None,
                      split_k: int | None = None, block_n: int | None = None, block_b: int | None = None) -> torch.Tensor:
    """x [..., K] @ W^T -> [..., N] (2-D [M, N] when `out`, a possibly column-sliced buffer, is given).

    M = x.numel() / K must be <= MAX_ROWS. `split_k`, `block_n`, `block_b` override the launch shape
    (sweeps and tests)."""
    x2, dst = linear_operands(x, w, out)
    num_rows, n = x2.shape[0], w.shape[0]
    if num_rows > MAX_ROWS:
        raise ValueError(f"quant_gemv handles at most {MAX_ROWS} rows, got {num_rows}: use quant_gemm")
    args, constexprs = plane_args(w)
    row_bytes = w.planes["qs"].shape[1]
    m_pad = triton.next_power_of_2(max(num_rows, 1))
    block_n = block_n or interpreter_tile(_gemv_kernel, n, _BLOCK_N)
    block_b = block_b or max(32, 256 // m_pad)
    num_byte_tiles = triton.cdiv(row_bytes, block_b)
    splits = split_k or _num_splits(triton.cdiv(n, block_n), num_byte_tiles, x.device)
    bytes_per_split = triton.cdiv(num_byte_tiles, splits) * block_b
    splits = triton.cdiv(row_bytes, bytes_per_split)
    if splits == 1:
        target, out_stride, split_stride = dst, dst.stride(0), 0
    else:
        target = torch.empty(splits, num_rows, n, dtype=torch.float32, device=x.device)
        out_stride, split_stride = n, num_rows * n
    if num_rows and n:
        _gemv_kernel[(triton.cdiv(n, block_n), splits)](
            x2, args[0], args[1], args[2], args[3], target,
            num_rows, n, row_bytes, bytes_per_split, x2.stride(0), out_stride, split_stride, *args[4:],
            GROUP=w.spec.group, M_PAD=m_pad, BLOCK_N=block_n, BLOCK_B=block_b, **constexprs,
        )
        if splits > 1:
            dst.copy_(target.sum(dim=0))
    return dst if out is not None else dst.view(*x.shape[:-1], n)
