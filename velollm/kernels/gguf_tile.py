"""Triton device functions shared by the quantized kernels: GGUF plane bytes -> float32 weights.

The kernels walk the qs plane of a row in byte tiles. A qs byte holds `shifts` elements (one per 8, 4
or 2 bits); `qs_element` says which element of its block the field at shift step s is, and `dequant`
turns the fields into float32 values, gathering the high bits, scales and mins of those elements from
the other planes. The activations are gathered at the same element indices, so the weights are read
in file order (one coalesced pass over qs), never reshuffled.

Every formula follows gguf_dequant (the bit-exact torch port of ggml-quants.c) operation by operation:
q * (d * sc) - (dmin * m) in float32, so values differ from the reference only where the compiler
fuses a multiply-add (one rounding instead of two).
"""

from __future__ import annotations

import torch

from velollm.kernels._triton import HAS_TRITON, tl, triton
from velollm.kernels.gguf_planes import QuantizedWeight

# QTYPE codes (gguf_planes.QUANT_TYPES[name].code); jit functions read globals only as constexpr objects
_code = tl.constexpr if HAS_TRITON else int
Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K = (_code(i) for i in range(10))

@triton.jit
def qs_element(p, s, QTYPE: tl.constexpr):
    """Index within its block of the element held by qs byte p (of the block) at shift step s."""
    if QTYPE == Q4_K:  # 4 chunks of 32 bytes: low nibbles are elements 64c.., high nibbles 64c+32..
        e = (p // 32) * 64 + s * 32 + p % 32
    elif QTYPE == Q5_K:
        e = (p // 32) * 64 + s * 32 + p % 32
    elif QTYPE == Q6_K:  # 2 halves of 64 bytes, each holding 128 elements
        e = (p // 64) * 128 + s * 64 + p % 64
    elif QTYPE == Q2_K:  # 2 halves of 32 bytes, four 2-bit fields each
        e = (p // 32) * 128 + s * 32 + p % 32
    elif QTYPE == Q3_K:
        e = (p // 32) * 128 + s * 32 + p % 32
    else:  # 32-element blocks: byte p holds element p (low nibble) and p + 16 (high nibble)
        e = p + s * 16
    return e


@triton.jit
def _f16(ptr, offset, mask):
    return tl.load(ptr + offset, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _u8(ptr, offset, mask):
    return tl.load(ptr + offset, mask=mask, other=0).to(tl.int32)


@triton.jit
def _k4_scale_min(sc_ptr, base, g, mask):
    """Q4_K/Q5_K: the 6-bit (scale, min) of sub-block g (0..7) from the 12 packed bytes at `base`."""
    j4 = g % 4
    s_a = _u8(sc_ptr, base + j4, mask)  # s[g] for g < 4, s[g - 4] otherwise
    s_b = _u8(sc_ptr, base + 4 + j4, mask)  # s[g + 4] for g < 4, s[g] otherwise
    s_c = _u8(sc_ptr, base + 8 + j4, mask)  # s[g + 4] for g >= 4
    low = g < 4
    sc = tl.where(low, s_a & 63, (s_c & 15) | ((s_a >> 6) << 4))
    mn = tl.where(low, s_b & 63, (s_c >> 4) | ((s_b >> 6) << 4))
    return sc.to(tl.float32), mn.to(tl.float32)


@triton.jit
def quant_values(q, s, b, e, rows, qh_ptr, qh_stride, mask, QTYPE: tl.constexpr):
    """int32 quants at shift step s of the qs bytes `q` (loaded, zero where masked), high bits merged and
    the type's fixed offset applied (-8, -16, -32, Q3_K's -4): the weight is quant * A - B (block_scales).

    b: block index in the row and e: element index in the block (qs_element), per byte; rows: the row
    of each byte (int64, broadcastable)."""
    if QTYPE == Q8_0:
        qv = q.to(tl.int32)
    else:
        qi = q.to(tl.int32)
        if QTYPE == Q4_0:
            qv = ((qi >> (4 * s)) & 15) - 8
        elif QTYPE == Q4_1:
            qv = (qi >> (4 * s)) & 15
        elif QTYPE == Q5_0:
            h = (_u8(qh_ptr, rows * qh_stride + 4 * b + e // 8, mask) >> (e % 8)) & 1
            qv = (((qi >> (4 * s)) & 15) | (h << 4)) - 16
        elif QTYPE == Q5_1:
            h = (_u8(qh_ptr, rows * qh_stride + 4 * b + e // 8, mask) >> (e % 8)) & 1
            qv = ((qi >> (4 * s)) & 15) | (h << 4)
        elif QTYPE == Q2_K:
            qv = (qi >> (2 * s)) & 3
        elif QTYPE == Q3_K:
            h = (_u8(qh_ptr, rows * qh_stride + 32 * b + e % 32, mask) >> (e // 32)) & 1
            qv = ((qi >> (2 * s)) & 3) - 4 + 4 * h  # the offset 4 is dropped where the hmask bit is set
        elif QTYPE == Q6_K:
            within = e % 128
            hb = _u8(qh_ptr, rows * qh_stride + 64 * b + (e // 128) * 32 + within % 32, mask)
            qv = (((qi >> (4 * s)) & 15) | (((hb >> (2 * (within // 32))) & 3) << 4)) - 32
        else:  # Q4_K, Q5_K
            qv = (qi >> (4 * s)) & 15
            if QTYPE == Q5_K:
                h = (_u8(qh_ptr, rows * qh_stride + 32 * b + e % 32, mask) >> (e // 32)) & 1
                qv = qv | (h << 4)
    return qv


@triton.jit
def block_scales(b, e, rows, sc_ptr, d_ptr, sc_stride, d_stride, mask, QTYPE: tl.constexpr):
    """float32 (A, B) of the (sub-)block holding element e of block b: the weight is quant * A - B.
    A is the reference's d * scale product; B its dmin * min (or -m for Q4_1/Q5_1), 0 without mins.
    Masked positions get A = B = 0."""
    if QTYPE == Q8_0 or QTYPE == Q4_0 or QTYPE == Q5_0:
        a = _f16(d_ptr, rows * d_stride + b, mask)
        m = a * 0.0
    elif QTYPE == Q4_1 or QTYPE == Q5_1:
        a = _f16(d_ptr, rows * d_stride + 2 * b, mask)
        m = -_f16(d_ptr, rows * d_stride + 2 * b + 1, mask)
    elif QTYPE == Q2_K:
        scb = _u8(sc_ptr, rows * sc_stride + 16 * b + e // 16, mask)
        a = _f16(d_ptr, rows * d_stride + 2 * b, mask) * (scb & 15).to(tl.float32)
        m = _f16(d_ptr, rows * d_stride + 2 * b + 1, mask) * (scb >> 4).to(tl.float32)
    elif QTYPE == Q3_K:
        j = e // 16
        base = rows * sc_stride + 12 * b
        low = (_u8(sc_ptr, base + j % 8, mask) >> (4 * (j // 8))) & 15
        high = (_u8(sc_ptr, base + 8 + j % 4, mask) >> (2 * (j // 4))) & 3
        a = _f16(d_ptr, rows * d_stride + b, mask) * ((low | (high << 4)) - 32).to(tl.float32)
        m = a * 0.0
    elif QTYPE == Q6_K:
        scale = tl.load(sc_ptr + rows * sc_stride + 16 * b + e // 16, mask=mask, other=0).to(tl.float32)
        a = _f16(d_ptr, rows * d_stride + b, mask) * scale
        m = a * 0.0
    else:  # Q4_K, Q5_K
        sc, mn = _k4_scale_min(sc_ptr, rows * sc_stride + 12 * b, e // 32, mask)
        a = _f16(d_ptr, rows * d_stride + 2 * b, mask) * sc
        m = _f16(d_ptr, rows * d_stride + 2 * b + 1, mask) * mn
    return a, m


@triton.jit
def dequant(q, s, b, e, rows, qh_ptr, sc_ptr, d_ptr, qh_stride, sc_stride, d_stride, mask,
            QTYPE: tl.constexpr):
    """float32 weights of the fields at shift step s of the qs bytes `q`, element by element (see
    quant_values). Masked positions come out finite (zero scales), never NaN."""
    a, m = block_scales(b, e, rows, sc_ptr, d_ptr, sc_stride, d_stride, mask, QTYPE)
    return quant_values(q, s, b, e, rows, qh_ptr, qh_stride, mask, QTYPE).to(tl.float32) * a - m


@triton.jit
def load_group_tile(qs_ptr, rows2, row_mask, qs_stride, off, end, NG: tl.constexpr, GROUP: tl.constexpr):
    """The qs bytes [off, off + NG * GROUP) of the rows `rows2` ([R, 1] int64) as an [R, NG, GROUP] tile,
    zero past `end` and in masked rows. A group's fields at one shift step share their scales (GROUP is
    the type's QuantType.group; `off` a multiple of it). Returns (bytes, group starts [NG], byte
    positions [NG, GROUP], their mask, the tile mask, the [R, NG] group mask)."""
    pg = off + tl.arange(0, NG) * GROUP
    pb = pg[:, None] + tl.arange(0, GROUP)[None, :]
    p_mask = pb < end
    mask = row_mask[:, None, None] & p_mask[None, :, :]
    q = tl.load(qs_ptr + rows2[:, :, None] * qs_stride + pb[None, :, :], mask=mask, other=0)
    return q, pg, pb, p_mask, mask, row_mask[:, None] & (pg < end)[None, :]


@triton.jit
def group_tile(q, s, pg, pb, rows2, mask, g_mask, qh_ptr, sc_ptr, d_ptr, qh_stride, sc_stride, d_stride,
               QTYPE: tl.constexpr, QK: tl.constexpr, QS_BYTES: tl.constexpr):
    """A load_group_tile tile at shift step s: int32 quants [R, NG, GROUP], the scales A and B of each
    group [R, NG] (weight = quant * A - B) and the K index of each field [NG, GROUP]."""
    b = pb // QS_BYTES
    e = qs_element(pb % QS_BYTES, s, QTYPE)
    qv = quant_values(q, s, b[None, :, :], e[None, :, :], rows2[:, :, None], qh_ptr, qh_stride, mask, QTYPE)
    a, m = block_scales((pg // QS_BYTES)[None, :], qs_element(pg % QS_BYTES, s, QTYPE)[None, :], rows2,
                        sc_ptr, d_ptr, sc_stride, d_stride, g_mask, QTYPE)
    return qv, a, m, b * QK + e


def plane_args(w: QuantizedWeight) -> tuple[list, dict[str, int]]:
    """The launch arguments every quantized kernel takes for `w`: [qs, qh, sc, d, qs_stride, qh_stride,
    sc_stride, d_stride] (a plane the type lacks is passed as qs, never read) and the type constexprs."""
    planes, spec = w.planes, w.spec
    tensors = [planes["qs"], *(planes.get(name, planes["qs"]) for name in ("qh", "sc", "d"))]
    constexprs = {"QTYPE": spec.code, "QK": spec.block, "QS_BYTES": spec.qs_bytes, "SHIFTS": spec.shifts}
    return [*tensors, *(t.stride(0) for t in tensors)], constexprs


def linear_operands(x: torch.Tensor, w: QuantizedWeight, out: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., K] as 2-D rows with unit column stride, and the [rows, N] output: `out` when given (any
    row stride, unit column stride: a column slice of a fused output), else a new tensor of x's dtype."""
    rows, cols = w.shape
    if x.shape[-1] != cols:
        raise ValueError(f"x has {x.shape[-1]} features, the {w.qtype} weight expects {cols}")
    if x.device != w.device:
        raise ValueError(f"x is on {x.device}, the weight on {w.device}")
    x2 = x.reshape(-1, cols)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    if out is None:
        return x2, torch.empty(x2.shape[0], rows, dtype=x.dtype, device=x.device)
    if tuple(out.shape) != (x2.shape[0], rows) or out.dtype != x.dtype or (rows > 1 and out.stride(1) != 1):
        raise ValueError(f"out must be a {x.dtype} [{x2.shape[0]}, {rows}] tensor with unit column stride")
    return x2, out
