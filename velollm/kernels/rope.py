"""Rotary embedding (neox / rotate-half, llama3 scaling) fused with the paged KV-cache write."""

from __future__ import annotations

import math

import torch

from velollm.config import RopeScaling
from velollm.kernels._triton import output_buffer, tl, triton
from velollm.kernels.fp8 import FP8_KV_DTYPE, round_to_e4m3, to_cache_dtype


def build_cos_sin_cache(
    head_dim: int, max_position: int, rope_theta: float, rope_scaling: RopeScaling | None = None
) -> torch.Tensor:
    """float32 [max_position, head_dim] = cat(cos, sin) of the head_dim/2 rotary frequencies."""
    inv_freq = 1.0 / (rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if rope_scaling is not None and rope_scaling.rope_type == "llama3":
        inv_freq = _llama3_inv_freq(inv_freq, rope_scaling)
    freqs = torch.arange(max_position, dtype=torch.float32)[:, None] * inv_freq[None, :]
    return torch.cat([freqs.cos(), freqs.sin()], dim=-1)


def _llama3_inv_freq(inv_freq: torch.Tensor, s: RopeScaling) -> torch.Tensor:
    # Mirrors transformers' `_compute_llama3_parameters` operation for operation, so frequencies match bitwise.
    low_freq_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_freq_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    smoothed = (1 - smooth) * inv_freq_llama / s.factor + smooth * inv_freq_llama
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, inv_freq_llama)


def apply_rope_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, H, D]; cos/sin float32 [T, D/2]. Rotate-half in float32, result in x.dtype."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)


def write_kv_ref(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Store k/v [T, Hkv, D] at flat slots of the [num_blocks, block_size, Hkv, D] caches; -1 is skipped.
    An fp8 cache gets saturated, rounded values (velollm/kernels/fp8.py)."""
    valid = slot_mapping >= 0
    slots = slot_mapping[valid]
    num_kv_heads, head_dim = k_cache.shape[-2:]
    k_cache.view(-1, num_kv_heads, head_dim)[slots] = to_cache_dtype(k[valid], k_cache.dtype)
    v_cache.view(-1, num_kv_heads, head_dim)[slots] = to_cache_dtype(v[valid], v_cache.dtype)


def rope_and_cache_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q [T, Hq, D] and k [T, Hkv, D] at `positions`, write k_rot and v into the cache."""
    cos, sin = cos_sin_cache[positions].chunk(2, dim=-1)
    q_rot = apply_rope_ref(q, cos, sin)
    k_rot = apply_rope_ref(k, cos, sin).to(q.dtype)
    write_kv_ref(k_rot, v, k_cache, v_cache, slot_mapping)
    return q_rot, k_rot


@triton.jit
def _rotate_heads(
    src_ptr, dst_ptr, t, src_t_stride, src_h_stride, num_heads, cos, sin,
    HALF: tl.constexpr, HALF_PAD: tl.constexpr, HEADS_PAD: tl.constexpr,
):
    """Rotate all heads of token t; store into the contiguous dst and return the rotated halves."""
    heads = tl.arange(0, HEADS_PAD)[:, None]
    d = tl.arange(0, HALF_PAD)[None, :]
    mask = (heads < num_heads) & (d < HALF)
    src = src_ptr + t * src_t_stride + heads * src_h_stride + d
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF, mask=mask, other=0.0).to(tl.float32)
    dtype = dst_ptr.dtype.element_ty
    o1 = (x1 * cos - x2 * sin).to(dtype)
    o2 = (x2 * cos + x1 * sin).to(dtype)
    dst = dst_ptr + t * (num_heads * 2 * HALF) + heads * (2 * HALF) + d
    tl.store(dst, o1, mask=mask)
    tl.store(dst + HALF, o2, mask=mask)
    return o1, o2


@triton.jit
def _cache_value(x, cache_ptr, KV_FP8: tl.constexpr):
    """x in the cache's dtype; an fp8 cache gets x saturated and rounded first (fp8.round_to_e4m3)."""
    if KV_FP8:
        x = round_to_e4m3(x.to(tl.float32))
    return x.to(cache_ptr.dtype.element_ty)


@triton.jit
def _rope_and_cache_kernel(
    q_ptr, k_ptr, v_ptr, pos_ptr, cos_sin_ptr, slot_ptr,
    q_out_ptr, k_out_ptr, k_cache_ptr, v_cache_ptr,
    q_t_stride, q_h_stride, k_t_stride, k_h_stride, v_t_stride, v_h_stride,
    cache_block_stride, cache_slot_stride, cache_h_stride,
    num_q_heads, num_kv_heads, block_size,
    HALF: tl.constexpr, HALF_PAD: tl.constexpr, Q_HEADS_PAD: tl.constexpr, KV_HEADS_PAD: tl.constexpr,
    KV_FP8: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    pos = tl.load(pos_ptr + t).to(tl.int64)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    d = tl.arange(0, HALF_PAD)[None, :]
    cos = tl.load(cos_sin_ptr + pos * (2 * HALF) + d, mask=d < HALF, other=0.0).to(tl.float32)
    sin = tl.load(cos_sin_ptr + pos * (2 * HALF) + HALF + d, mask=d < HALF, other=0.0).to(tl.float32)
    # Padding tokens (slot -1) still get rotated outputs but write no cache head.
    cache_heads = tl.where(slot >= 0, num_kv_heads, 0)
    safe_slot = tl.where(slot >= 0, slot, 0)
    cache_off = (safe_slot // block_size) * cache_block_stride + (safe_slot % block_size) * cache_slot_stride
    _rotate_heads(q_ptr, q_out_ptr, t, q_t_stride, q_h_stride, num_q_heads, cos, sin,
                  HALF, HALF_PAD, Q_HEADS_PAD)
    k1, k2 = _rotate_heads(k_ptr, k_out_ptr, t, k_t_stride, k_h_stride, num_kv_heads, cos, sin,
                           HALF, HALF_PAD, KV_HEADS_PAD)
    heads = tl.arange(0, KV_HEADS_PAD)[:, None]
    kmask = (heads < cache_heads) & (d < HALF)
    kdst = k_cache_ptr + cache_off + heads * cache_h_stride + d
    tl.store(kdst, _cache_value(k1, k_cache_ptr, KV_FP8), mask=kmask)
    tl.store(kdst + HALF, _cache_value(k2, k_cache_ptr, KV_FP8), mask=kmask)
    dv = tl.arange(0, 2 * HALF_PAD)[None, :]
    vmask = (heads < cache_heads) & (dv < 2 * HALF)
    v = tl.load(v_ptr + t * v_t_stride + heads * v_h_stride + dv, mask=vmask, other=0.0)
    tl.store(v_cache_ptr + cache_off + heads * cache_h_stride + dv, _cache_value(v, v_cache_ptr, KV_FP8), mask=vmask)


def _check_rope_inputs(q, k, v, positions, cos_sin_cache, k_cache, v_cache, slot_mapping) -> None:
    num_tokens, _, head_dim = q.shape
    if k.shape != v.shape or k.shape[0] != num_tokens or k.shape[2] != head_dim:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not agree")
    if head_dim % 2 or cos_sin_cache.shape[-1] != head_dim or cos_sin_cache.dtype != torch.float32:
        raise ValueError("cos_sin_cache must be float32 [max_position, head_dim] with an even head_dim")
    if k_cache.shape != v_cache.shape or k_cache.shape[2:] != k.shape[1:]:
        raise ValueError(f"caches {tuple(k_cache.shape)} do not fit k {tuple(k.shape)}")
    if k_cache.stride() != v_cache.stride() or k_cache.stride(-1) != 1:
        raise ValueError("k_cache and v_cache need identical strides and a contiguous head_dim")
    if positions.shape != (num_tokens,) or slot_mapping.shape != (num_tokens,):
        raise ValueError("positions and slot_mapping must be [num_tokens]")
    if not cos_sin_cache.is_contiguous():
        raise ValueError("cos_sin_cache must be contiguous")
    if k_cache.dtype not in (q.dtype, FP8_KV_DTYPE) or v_cache.dtype != k_cache.dtype:
        raise ValueError(f"caches must be {q.dtype} (q's dtype) or {FP8_KV_DTYPE}, got {k_cache.dtype}/{v_cache.dtype}")


def rope_and_cache_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    *,
    q_out: torch.Tensor | None = None,
    k_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_rope_inputs(q, k, v, positions, cos_sin_cache, k_cache, v_cache, slot_mapping)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    num_tokens, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    q_out = output_buffer(q_out, q.shape, q.dtype, q.device, "q_out")
    k_out = output_buffer(k_out, k.shape, q.dtype, q.device, "k_out")
    half = head_dim // 2
    if num_tokens:
        _rope_and_cache_kernel[(num_tokens,)](
            q, k, v, positions, cos_sin_cache, slot_mapping,
            q_out, k_out, k_cache, v_cache,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
            num_q_heads, num_kv_heads, k_cache.shape[1],
            HALF=half, HALF_PAD=triton.next_power_of_2(half),
            Q_HEADS_PAD=triton.next_power_of_2(num_q_heads), KV_HEADS_PAD=triton.next_power_of_2(num_kv_heads),
            KV_FP8=k_cache.dtype == FP8_KV_DTYPE,
        )
    return q_out, k_out
