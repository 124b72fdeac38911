"""Quantized GEMM for prefill and large batches: y [M, N] = x [M, K] @ W^T, W kept in GGUF planes.

Each program computes a [BLOCK_M, BLOCK_N] tile: per qs byte tile it dequantizes the [BLOCK_N, BLOCK_B]
weights in registers (gguf_tile: quants per field, scales per group of fields sharing them), rounds them to the activation dtype (the weights the dequantize-at-load
path holds, so the tensor-core products match it) and feeds tl.dot with the activations gathered at the
same element indices; float32 accumulation. Program ids are grouped along M so that the weight tiles
a group reads stay in L2.
"""

from __future__ import annotations

import torch

from velollm.kernels._triton import dot_dtype_args, interpreter_tile, launch_options, tl, triton
from velollm.kernels.gguf_planes import QuantizedWeight, quantized_matmul_ref
from velollm.kernels.gguf_tile import group_tile, linear_operands, load_group_tile, plane_args

quant_gemm_ref = quantized_matmul_ref


@triton.jit
def _gemm_kernel(
    x_ptr, qs_ptr, qh_ptr, sc_ptr, d_ptr, out_ptr,
    M, N, row_bytes, x_stride, out_stride, qs_stride, qh_stride, sc_stride, d_stride,
    QTYPE: tl.constexpr, QK: tl.constexpr, QS_BYTES: tl.constexpr, SHIFTS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr, GROUP_M: tl.constexpr,
    GROUP: tl.constexpr, DOT_PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
):
    NG: tl.constexpr = BLOCK_B // GROUP
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    per_group = GROUP_M * tl.cdiv(N, BLOCK_N)
    first_m = (pid // per_group) * GROUP_M
    group_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_m
    pid_n = (pid % per_group) // group_m
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = m < M
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    rows2 = rows.to(tl.int64)[:, None]
    x_rows = x_ptr + m.to(tl.int64)[:, None] * x_stride
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for off in range(0, row_bytes, BLOCK_B):
        q, pg, pb, p_mask, mask, g_mask = load_group_tile(qs_ptr, rows2, row_mask, qs_stride, off, row_bytes, NG, GROUP)
        k_mask = tl.reshape(p_mask, [BLOCK_B])
        for s in tl.static_range(SHIFTS):
            qv, a, bias, cols = group_tile(q, s, pg, pb, rows2, mask, g_mask, qh_ptr, sc_ptr, d_ptr, qh_stride,
                                           sc_stride, d_stride, QTYPE, QK, QS_BYTES)
            # scales once per group, broadcast over its fields; tiles merged back to [rows, BLOCK_B] for the dot
            w = tl.reshape(qv.to(tl.float32) * a[:, :, None] - bias[:, :, None], [BLOCK_N, BLOCK_B])
            x = tl.load(x_rows + tl.reshape(cols, [BLOCK_B])[None, :], mask=m_mask[:, None] & k_mask[None, :], other=0.0)
            w = w.to(x_ptr.dtype.element_ty)
            if DOT_F32:
                acc = tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)), acc, input_precision=DOT_PRECISION)
            else:
                acc = tl.dot(x, tl.trans(w), acc)
    out = out_ptr + m.to(tl.int64)[:, None] * out_stride + rows[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & row_mask[None, :])


def _tile_m(num_rows: int) -> int:
    return 16 if num_rows <= 16 else 32 if num_rows <= 32 else 64


def quant_gemm_triton(x: torch.Tensor, w: QuantizedWeight, *, out: torch.Tensor | None = None,
                      block_m: int | None = None, block_n: int | None = None, block_b: int = 32,
                      num_warps: int = 8, num_stages: int | None = None) -> torch.Tensor:
    """x [..., K] @ W^T -> [..., N] (2-D [M, N] when `out`, a possibly column-sliced buffer, is given).

    The tile arguments override the launch shape (sweeps and tests); block_b counts qs bytes, so a tile
    spans block_b * shifts elements of K (blocks may straddle tiles)."""
    x2, dst = linear_operands(x, w, out)
    num_rows, n = x2.shape[0], w.shape[0]
    args, constexprs = plane_args(w)
    block_m = block_m or _tile_m(num_rows)
    # 8 warps: 4 spill registers on sm_90 (ptxas); Q3_K's scale decoding spills at 64 columns too
    block_n = block_n or interpreter_tile(_gemm_kernel, n, 32 if w.qtype == "Q3_K" else 64)
    if num_rows and n:
        grid = (triton.cdiv(num_rows, block_m) * triton.cdiv(n, block_n),)
        _gemm_kernel[grid](
            x2, args[0], args[1], args[2], args[3], dst,
            num_rows, n, w.planes["qs"].shape[1], x2.stride(0), dst.stride(0), *args[4:],
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_B=block_b, GROUP_M=8, GROUP=w.spec.group, **constexprs,
            **dot_dtype_args(x.dtype, _gemm_kernel), **launch_options(num_warps, num_stages),
        )
    return dst if out is not None else dst.view(*x.shape[:-1], n)
