"""ggml's reference K-quant block quantizers (ggml-quants.c: `quantize_row_q4_K_ref`, `quantize_row_q5_K_ref`,
`quantize_row_q6_K_ref`, the ones llama.cpp's and Ollama's quantizers run when there is no importance matrix),
ported to numpy bit for bit.

Every C `float` operation is one float32 numpy operation in the same order, vectorized across sub-blocks: the
arrays are laid out element-major, `(values per sub-block, sub-blocks)`, so `x[i]` is the i-th value of every
sub-block and each C loop `s += ...` is numpy's reduce down axis 0, which adds row after row in C's sequential
order (numpy's pairwise sum is for the contiguous axis only; `seq_sum`). `nearest_int` is ggml's bit trick
itself (add 1.5 * 2**23, keep the mantissa): round half to even, and the same garbage as C for values past
2**22, infinities and NaN; where every value of a search step is known to lie well inside that range, np.rint
rounds the same in one pass (`_round_clip`).

For speed the searches work in place in a few preallocated buffers, and keep the best step's scale factors
rather than its levels (the levels are computed again once at the end): the same float32 operations on every
value, fewer passes over memory. tests/gguf/test_kquants.py compares the bytes with llama.cpp's own
quantizer's.
"""

from __future__ import annotations

import numpy as np

F = np.float32
QK_K = 256
GROUP_MAX_EPS = F(1e-15)
BLOCK_BYTES = {"Q4_K": 144, "Q5_K": 176, "Q6_K": 210}


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    """`(n, 256)` float32 super-blocks as `(n, 144)` Q4_K bytes: d, dmin, 12 packed 6-bit scales/mins, 128 nibbles."""
    d, dmin, scales, q = _q45_k(x, nmax=15, rmin=-1.0, nstep=20)
    packed = q.reshape(-1, 4, 2, 32)
    qs = packed[:, :, 0, :] | (packed[:, :, 1, :] << 4)
    return np.concatenate([d, dmin, scales, qs.reshape(-1, 128)], axis=1)


def quantize_q5_k(x: np.ndarray) -> np.ndarray:
    """`(n, 256)` float32 super-blocks as `(n, 176)` Q5_K bytes: d, dmin, 12 scale bytes, 32 high bits, 128 nibbles."""
    d, dmin, scales, q = _q45_k(x, nmax=31, rmin=-0.5, nstep=15)
    packed = q.reshape(-1, 4, 2, 32)  # [super-block, 64-value group, low/high half, value]
    qs = (packed[:, :, 0, :] & 0xF) | ((packed[:, :, 1, :] & 0xF) << 4)
    bits = (packed >> 4) << np.arange(8, dtype=np.uint8).reshape(1, 4, 2, 1)  # half h of group g: bit 2g+h
    qh = np.bitwise_or.reduce(bits.reshape(-1, 8, 32), axis=1)
    return np.concatenate([d, dmin, scales, qh, qs.reshape(-1, 128)], axis=1)


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    """`(n, 256)` float32 super-blocks as `(n, 210)` Q6_K bytes: 128 low nibbles, 64 high-bit bytes, 16 int8
    scales, d."""
    nb = x.shape[0]
    with np.errstate(all="ignore"):
        sub = np.ascontiguousarray(x.reshape(nb * 16, 16).T)
        scale, L = make_qx_quants(sub, nmax=32)
        scales = scale.reshape(nb, 16)
        max_scale, max_abs = np.zeros(nb, F), np.zeros(nb, F)
        for ib in range(16):
            bigger = np.abs(scales[:, ib]) > max_abs
            max_abs = np.where(bigger, np.abs(scales[:, ib]), max_abs)
            max_scale = np.where(bigger, scales[:, ib], max_scale)
        zero = max_abs < GROUP_MAX_EPS
        iscale = F(-128) / max_scale
        d = (F(1) / iscale).astype(np.float16)
        sc = np.minimum(127, nearest_int(iscale[:, None] * scales)).astype(np.int8)
        step = (d.astype(F)[:, None] * sc.astype(F)).reshape(-1)  # per sub-block, in `sub`'s order
        fresh = (np.clip(nearest_int(sub / step), -32, 31) + 32).astype(np.uint8)
        L = _unless_zero_step(step, fresh, L)
    q = L.T.reshape(nb, 2, 4, 32)  # [super-block, 128-value half, 32-value quarter, value]
    ql = (q[:, :, 0:2, :] & 0xF) | ((q[:, :, 2:4, :] & 0xF) << 4)
    qh = np.bitwise_or.reduce((q >> 4) << np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1), axis=2)
    out = np.concatenate([ql.reshape(nb, 128), qh.reshape(nb, 64), sc.view(np.uint8), d.view(np.uint8).reshape(nb, 2)],
                         axis=1)
    out[zero] = 0
    return out


def _q45_k(x: np.ndarray, nmax: int, rmin: float, nstep: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Q4_K's and Q5_K's shared part: (d, dmin as F16 bytes, 12 scale bytes, the `(n, 256)` uint8 levels)."""
    nb = x.shape[0]
    with np.errstate(all="ignore"):
        sub = np.ascontiguousarray(x.reshape(nb * 8, 32).T)
        sum_x2 = seq_sum(sub * sub)
        av_x = np.sqrt(sum_x2 / F(32))
        weights = av_x + np.abs(sub)
        scale, the_min, L = make_qkx2_quants(sub, weights, nmax, rmin, 0.1, nstep)
        scales, mins = scale.reshape(nb, 8), the_min.reshape(nb, 8)
        max_scale, max_min = np.zeros(nb, F), np.zeros(nb, F)
        for j in range(8):
            max_scale = np.where(scales[:, j] > max_scale, scales[:, j], max_scale)
            max_min = np.where(mins[:, j] > max_min, mins[:, j], max_min)
        inv_scale = np.where(max_scale > 0, F(63) / max_scale, F(0))
        inv_min = np.where(max_min > 0, F(63) / max_min, F(0))
        ls = np.minimum(63, nearest_int(inv_scale[:, None] * scales) & 0xFF).astype(np.uint8)  # C's uint8_t cast
        lm = np.minimum(63, nearest_int(inv_min[:, None] * mins) & 0xFF).astype(np.uint8)
        d = (max_scale / F(63)).astype(np.float16)
        dmin = (max_min / F(63)).astype(np.float16)
        step = (d.astype(F)[:, None] * ls.astype(F)).reshape(-1)
        shift = (dmin.astype(F)[:, None] * lm.astype(F)).reshape(-1)
        fresh = np.clip(nearest_int((sub + shift) / step), 0, nmax).astype(np.uint8)
        L = _unless_zero_step(step, fresh, L)
    packed = np.empty((nb, 12), np.uint8)
    packed[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    packed[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    packed[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    return (d.view(np.uint8).reshape(nb, 2), dmin.view(np.uint8).reshape(nb, 2), packed,
            np.ascontiguousarray(L.T).reshape(nb, QK_K))


def make_qkx2_quants(x: np.ndarray, weights: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ggml's `make_qkx2_quants(n, nmax, x, weights, L, &the_min, Laux, rmin, rdelta, nstep, false)` on each
    column of `x` `(n, sub-blocks)`: (scale, the_min, levels L as uint8 `(n, sub-blocks)`)."""
    mn, mx = x[0].copy(), x[0].copy()
    sum_w = weights[0].copy()
    sum_x = sum_w * x[0]
    wx = weights * x
    for i in range(1, x.shape[0]):
        mn = np.where(x[i] < mn, x[i], mn)
        mx = np.where(x[i] > mx, x[i], mx)
        sum_w += weights[i]
        sum_x += wx[i]
    x_min = mn
    mn = np.where(mn > 0, F(0), mn)
    flat = mx == mn  # C returns here: L = 0, the_min = -min, scale 0
    flat_min = mn
    finite = bool(np.isfinite(x).all())
    laux, wl, scratch = (np.empty_like(x) for _ in range(3))
    sum_l, sum_l2, sum_xl, best_error = (np.empty(x.shape[1], F) for _ in range(4))

    def levels(iscale: np.ndarray, mn: np.ndarray) -> np.ndarray:
        """C's `MAX(0, MIN(nmax, nearest_int(iscale*(x[i] - min))))`, into laux (a flat column's: not used)."""
        bound = np.abs(iscale) * np.maximum(np.abs(x_min - mn), np.abs(mx - mn)) if finite else None
        np.subtract(x, mn, out=laux)
        np.multiply(laux, iscale, out=laux)
        return _round_clip(laux, None if bound is None else np.where(flat, F(0), bound), 0, nmax)

    def error(scale: np.ndarray, levels: np.ndarray, mn: np.ndarray, out: np.ndarray) -> np.ndarray:
        diff = np.multiply(levels, scale, out=scratch)  # C: diff = scale * L + min - x; w * (diff * diff)
        diff += mn
        diff -= x
        diff *= diff
        diff *= weights
        return seq_sum(diff, out)

    iscale = F(nmax) / (mx - mn)
    scale = F(1) / iscale
    error(scale, levels(iscale, mn), mn, best_error)
    # L is the levels of the best step so far; rather than copying them column by column (a masked copy costs
    # as much as the step), the step's iscale and min are kept and its levels computed again at the end
    best_iscale, best_shift = iscale, mn
    for step in range(nstep + 1):
        iscale = (F(rmin) + F(rdelta) * F(step) + F(nmax)) / (mx - mn)
        levels(iscale, mn)
        np.multiply(weights, laux, out=wl)
        seq_sum(wl, sum_l)
        seq_sum(np.multiply(wl, laux, out=scratch), sum_l2)
        seq_sum(np.multiply(wl, x, out=scratch), sum_xl)
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
        positive = this_min > 0
        this_min = np.where(positive, F(0), this_min)
        this_scale = np.where(positive, sum_xl / sum_l2, this_scale)
        cur_error = error(this_scale, laux, this_min, sum_l)  # sum_l is free again
        better = (D > 0) & (cur_error < best_error)
        best_iscale, best_shift = np.where(better, iscale, best_iscale), np.where(better, mn, best_shift)
        best_error = np.where(better, cur_error, best_error)
        scale = np.where(better, this_scale, scale)
        mn = np.where(better, this_min, mn)
    L = levels(best_iscale, best_shift).astype(np.uint8)
    if flat.any():
        L[:, flat] = 0
    return np.where(flat, F(0), scale), -np.where(flat, flat_min, mn), L


def make_qx_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """ggml's `make_qx_quants(n, nmax, x, L, 1, NULL)` (weights x*x) on each column of `x` `(n, sub-blocks)`:
    (scale, levels L + nmax as uint8 `(n, sub-blocks)`)."""
    amax, mx = np.zeros(x.shape[1], F), np.zeros(x.shape[1], F)
    for i in range(x.shape[0]):
        bigger = np.abs(x[i]) > amax
        amax = np.where(bigger, np.abs(x[i]), amax)
        mx = np.where(bigger, x[i], mx)
    zero = amax < GROUP_MAX_EPS
    w = x * x
    wx = w * x
    finite = bool(np.isfinite(x).all())
    lf, scratch = np.empty_like(x), np.empty_like(x)

    def levels(iscale: np.ndarray) -> np.ndarray:
        """C's `MAX(-nmax, MIN(nmax-1, nearest_int(iscale * x[i])))`, into lf (an all-zero column's: not used)."""
        np.multiply(x, iscale, out=lf)
        return _round_clip(lf, np.where(zero, F(0), np.abs(iscale) * amax) if finite else None, -nmax, nmax - 1)

    def sums(iscale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        levels(iscale)
        sumlx = seq_sum(np.multiply(wx, lf, out=scratch))
        wl = np.multiply(w, lf, out=scratch)
        wl *= lf
        return sumlx, seq_sum(wl)

    best_iscale = F(-nmax) / mx
    sumlx, suml2 = sums(best_iscale)
    scale = np.where(suml2 != 0, sumlx / suml2, F(0))
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(F(nmax) + F(0.1) * F(step)) / mx
        sumlx, suml2 = sums(iscale)
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        best_iscale = np.where(better, iscale, best_iscale)  # its levels computed again at the end
        scale = np.where(better, sumlx / suml2, scale)
        best = np.where(better, scale * sumlx, best)
    L = (levels(best_iscale) + F(nmax)).astype(np.uint8)
    if zero.any():
        L[:, zero] = 0
    return np.where(zero, F(0), scale), L


def _unless_zero_step(step: np.ndarray, fresh: np.ndarray, L: np.ndarray) -> np.ndarray:
    """C's `if (!d) continue;`: a sub-block whose step is 0 keeps the search's levels (a broadcast np.where
    would cost a pass over every value for the few that do)."""
    keep = step == 0
    if keep.any():
        fresh[:, keep] = L[:, keep]
    return fresh


def nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's `nearest_int`: the float32 `v` + 12582912.f, its low 23 bits less 2**22 (int32)."""
    bits = (v.astype(F, copy=False) + F(12582912.0)).view(np.int32)
    return (bits & 0x7FFFFF) - 0x400000


def seq_sum(p: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """C's `float s = 0; for (i...) s += p[i];` down axis 0, in that order (float32). numpy reduces a C-ordered
    array along its outer axis row after row (its pairwise sum is for the inner axis only: a single column is one)."""
    if p.ndim == 2 and p.shape[1] > 1 and p.flags.c_contiguous:
        return np.add.reduce(p, axis=0, out=out, initial=F(0))
    s = np.zeros(p.shape[1:], F) if out is None else out
    s[...] = 0
    for row in p:
        s += row
    return s


_EXACT = F(1 << 21)  # |v| below it: v + 1.5 * 2**23 stays in [2**23, 2**24), and nearest_int(v) is np.rint(v)


def _round_clip(v: np.ndarray, bound: np.ndarray | None, lo: int, hi: int) -> np.ndarray:
    """`clip(nearest_int(v), lo, hi)` as float32, in place. `bound` bounds |v| per column (None: unknown); within
    _EXACT numpy's rint is ggml's trick (ties to even), past it (or NaN) the trick itself gives C's garbage. A
    -0.0 level where C has 0 changes no sum nor error (every sum starts from +0.0, every error squares)."""
    if bound is not None and np.all(bound < _EXACT):
        np.rint(v, out=v)
    else:
        v[...] = nearest_int(v)
    return np.clip(v, F(lo), F(hi), out=v)
