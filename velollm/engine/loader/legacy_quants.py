"""ggml's reference Q5_0 and Q5_1 block quantizers (`quantize_row_q5_0_ref`, `quantize_row_q5_1_ref`), the
fallbacks of Q4_K and Q5_K for rows that are not a multiple of 256, bit for bit.

gguf-py has both, but takes a block's extreme value with numpy's min/max/argmax, which pick either zero of a
block of signed zeros (common in F16 files); C keeps the first value it saw, and for Q5_0 the +0.0 it started
from, and the sign lands in the F16 scale. Here the extremes follow C's loops; the rest is gguf-py's arithmetic.
"""

from __future__ import annotations

import numpy as np

F = np.float32


def quantize_q5_0(x: np.ndarray) -> np.ndarray:
    """`(n, 32)` float32 blocks as `(n, 22)` Q5_0 bytes: d, 32 high bits, 16 bytes of nibble pairs."""
    ax = np.abs(x)
    first = np.argmax(ax, axis=1)[:, None]  # C: `if (amax < fabsf(v))`, the first of the largest
    mx = np.take_along_axis(x, first, axis=1)
    mx = np.where(np.take_along_axis(ax, first, axis=1) > 0, mx, F(0))  # none larger than C's starting 0.0f
    with np.errstate(all="ignore"):
        d = mx / F(-16)
        inv = np.where(d != 0, F(1) / d, F(0))
        q = np.minimum(31, np.trunc(x * inv + F(16.5)).astype(np.int32)).astype(np.uint8)
    return np.concatenate([_half(d), _pack5(q)], axis=1)


def quantize_q5_1(x: np.ndarray) -> np.ndarray:
    """`(n, 32)` float32 blocks as `(n, 24)` Q5_1 bytes: d, min, 32 high bits, 16 bytes of nibble pairs."""
    mn = np.take_along_axis(x, np.argmin(x, axis=1)[:, None], axis=1)  # C: `if (v < min)`, the first smallest
    mx = np.take_along_axis(x, np.argmax(x, axis=1)[:, None], axis=1)
    with np.errstate(all="ignore"):
        d = (mx - mn) / F(31)
        inv = np.where(d != 0, F(1) / d, F(0))
        q = np.trunc((x - mn) * inv + F(0.5)).astype(np.int32).astype(np.uint8)
    return np.concatenate([_half(d), _half(mn), _pack5(q)], axis=1)


def _half(v: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):  # past F16's range: inf, as C's conversion gives
        v = v.astype(np.float16)
    return v.view(np.uint8).reshape(v.shape[0], 2)


def _pack5(q: np.ndarray) -> np.ndarray:
    """32 five-bit values: their fifth bits as a little-endian uint32, then value j | value j+16 << 4."""
    qh = np.packbits((q >> 4) & 1, axis=1, bitorder="little")
    qs = (q[:, :16] & 0xF) | ((q[:, 16:] & 0xF) << 4)
    return np.concatenate([qh, qs], axis=1)
