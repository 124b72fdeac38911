"""Dequantize selected rows of a GGUF weight: the embedding lookup of a quantized token_embd.

out [T, K] = dequant(W)[ids] in the model dtype. One program per (row, qs byte tile); the bytes are
read once and every shift step's elements stored at their positions in the row.
"""

from __future__ import annotations

import torch

from velollm.kernels._triton import output_buffer, tl, triton
from velollm.kernels.gguf_planes import QuantizedWeight, dequantize_weight
from velollm.kernels.gguf_tile import dequant, plane_args, qs_element


def dequantize_rows_ref(ids: torch.Tensor, w: QuantizedWeight, dtype: torch.dtype) -> torch.Tensor:
    """The bit-exact dequantized rows `ids` (any shape) -> [*ids.shape, K] in `dtype`."""
    rows = dequantize_weight(w.rows(ids.reshape(-1)), dtype)
    return rows.view(*ids.shape, w.shape[1])


@triton.jit
def _rows_kernel(
    ids_ptr, qs_ptr, qh_ptr, sc_ptr, d_ptr, out_ptr,
    row_bytes, out_stride, qs_stride, qh_stride, sc_stride, d_stride,
    QTYPE: tl.constexpr, QK: tl.constexpr, QS_BYTES: tl.constexpr, SHIFTS: tl.constexpr, BLOCK_B: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    row = tl.load(ids_ptr + t).to(tl.int64)
    pb = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    mask = pb < row_bytes
    q = tl.load(qs_ptr + row * qs_stride + pb, mask=mask, other=0)
    b = pb // QS_BYTES
    p = pb % QS_BYTES
    for s in tl.static_range(SHIFTS):
        e = qs_element(p, s, QTYPE)
        w = dequant(q, s, b, e, row, qh_ptr, sc_ptr, d_ptr, qh_stride, sc_stride, d_stride, mask, QTYPE)
        tl.store(out_ptr + t * out_stride + b * QK + e, w.to(out_ptr.dtype.element_ty), mask=mask)


def dequantize_rows_triton(ids: torch.Tensor, w: QuantizedWeight, dtype: torch.dtype, *,
                           out: torch.Tensor | None = None, block_b: int = 128) -> torch.Tensor:
    """Rows `ids` (int32/int64, any shape, each in [0, N)) of W dequantized -> [*ids.shape, K] in `dtype`."""
    if ids.dtype not in (torch.int32, torch.int64) or ids.device != w.device:
        raise ValueError(f"ids must be an int32/int64 tensor on {w.device}")
    flat = ids.reshape(-1).contiguous()
    cols = w.shape[1]
    dst = output_buffer(out, (*ids.shape, cols), dtype, ids.device, "out").view(-1, cols)
    args, constexprs = plane_args(w)
    row_bytes = w.planes["qs"].shape[1]
    if flat.numel():
        _rows_kernel[(flat.numel(), triton.cdiv(row_bytes, block_b))](
            flat, args[0], args[1], args[2], args[3], dst, row_bytes, dst.stride(0), *args[4:],
            BLOCK_B=block_b, **constexprs,
            enable_fp_fusion=False,  # q * A - B rounded twice, as the reference: rows equal dequantize-at-load's
        )
    return dst.view(*ids.shape, cols)
