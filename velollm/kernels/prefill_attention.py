"""Causal prefill attention over paged KV: variable-length sequences, cached prefix, GQA."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from velollm.kernels._triton import dot_dtype_args, launch_options, output_buffer, tl, triton
from velollm.kernels.decode_attention import LOG2E, check_paged_inputs


def paged_prefill_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """q [T, Hq, D] packed by cu_seqlens_q [S+1] -> out [T, Hq, D]. Float32 softmax.

    Query i of sequence s sits at position context_lens[s] - q_len + i and attends to KV positions
    <= its own; the KV of all those positions is already in the paged cache.
    """
    num_heads, head_dim = q.shape[1:]
    num_kv_heads = k_cache.shape[2]
    block_size = k_cache.shape[1]
    out = torch.empty_like(q)
    starts = cu_seqlens_q.tolist()
    lens = context_lens.tolist()
    for s, kv_len in enumerate(lens):
        start, end = starts[s], starts[s + 1]
        q_len = end - start
        if q_len == 0:
            continue
        blocks = block_tables[s, : -(-kv_len // block_size)].long()
        k = k_cache[blocks].flatten(0, 1)[:kv_len].float()  # [L, Hkv, D]
        v = v_cache[blocks].flatten(0, 1)[:kv_len].float()
        mask = None  # without a cached prefix, plain causal (top-left == bottom-right alignment)
        if q_len != kv_len:
            q_pos = torch.arange(kv_len - q_len, kv_len, device=q.device)
            mask = torch.arange(kv_len, device=q.device)[None, :] <= q_pos[:, None]  # [q_len, L]
        # 4-D inputs: CPU SDPA takes its flash kernel only for batched 4-D tensors.
        o = F.scaled_dot_product_attention(
            q[start:end].float().transpose(0, 1)[None],  # [1, Hq, q_len, D]
            k.transpose(0, 1)[None],
            v.transpose(0, 1)[None],
            attn_mask=mask,
            is_causal=mask is None,
            scale=scale,
            enable_gqa=num_heads != num_kv_heads,
        )
        out[start:end] = o[0].transpose(0, 1).to(q.dtype)
    return out


@triton.jit(do_not_specialize=["bt_stride"])  # the block-table width changes every step (see decode)
def _prefill_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, cu_seqlens_ptr, context_lens_ptr, out_ptr,
    qk_scale,
    q_t_stride, q_h_stride, out_t_stride, out_h_stride, bt_stride,
    cache_block_stride, cache_slot_stride, cache_h_stride, block_size,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
):
    """One program = BLOCK_M queries of one sequence x one query head (flash-attention forward)."""
    seq = tl.program_id(0).to(tl.int64)
    m_block = tl.program_id(1)
    h = tl.program_id(2)
    q_start = tl.load(cu_seqlens_ptr + seq).to(tl.int64)
    q_len = (tl.load(cu_seqlens_ptr + seq + 1) - q_start).to(tl.int32)
    if m_block * BLOCK_M >= q_len:
        return
    ctx = tl.load(context_lens_ptr + seq).to(tl.int32)
    m = m_block * BLOCK_M + tl.arange(0, BLOCK_M)
    d = tl.arange(0, HEAD_DIM_PAD)
    q_pos = ctx - q_len + m  # rows past q_len are never stored and still see key 0, so no NaN
    q_mask = (m[:, None] < q_len) & (d[None, :] < HEAD_DIM)
    q = tl.load(q_ptr + (q_start + m[:, None]) * q_t_stride + h * q_h_stride + d[None, :], mask=q_mask, other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM_PAD], tl.float32)
    n = tl.arange(0, BLOCK_N)
    kv_head_off = (h // GROUP) * cache_h_stride
    # Causal: this block's last query sits at ctx - q_len + (m_block + 1) * BLOCK_M - 1.
    hi = tl.minimum(ctx, ctx - q_len + (m_block + 1) * BLOCK_M)
    for tok0 in range(0, hi, BLOCK_N):
        pos = tok0 + n
        kv_valid = pos < hi
        block = tl.load(block_tables_ptr + seq * bt_stride + pos // block_size, mask=kv_valid, other=0).to(tl.int64)
        row = block * cache_block_stride + (pos % block_size) * cache_slot_stride + kv_head_off
        kv_mask = kv_valid[:, None] & (d[None, :] < HEAD_DIM)
        # To q's dtype (float32 under DOT_F32): a no-op for a cache in the model dtype, an fp8 cache's upcast.
        k = tl.load(k_cache_ptr + row[:, None] + d[None, :], mask=kv_mask, other=0.0).to(q.dtype)
        v = tl.load(v_cache_ptr + row[:, None] + d[None, :], mask=kv_mask, other=0.0).to(q.dtype)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        s = tl.where(kv_valid[None, :] & (pos[None, :] <= q_pos[:, None]), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new
    o = acc / l_i[:, None]
    o_ptr = out_ptr + (q_start + m[:, None]) * out_t_stride + h * out_h_stride + d[None, :]
    tl.store(o_ptr, o.to(out_ptr.dtype.element_ty), mask=q_mask)


def paged_prefill_attention_triton(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    *,
    out: torch.Tensor | None = None,
    max_query_len: int | None = None,
    block_m: int = 64,
    block_n: int = 64,
    num_warps: int = 4,
    num_stages: int | None = None,
) -> torch.Tensor:
    """`max_query_len` (if the caller knows it) saves the host read of cu_seqlens_q; the tile and launch
    knobs exist for benchmarks/prefill_attention.py."""
    num_tokens, num_heads, head_dim = q.shape
    num_seqs = context_lens.shape[0]
    check_paged_inputs(q, k_cache, v_cache, block_tables, num_seqs)
    if cu_seqlens_q.shape != (num_seqs + 1,):
        raise ValueError("cu_seqlens_q must be [num_seqs + 1]")
    out = output_buffer(out, q.shape, q.dtype, q.device, "out")
    if num_tokens == 0 or num_seqs == 0:
        return out
    if max_query_len is None:
        max_query_len = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max())
    block_m = min(block_m, max(16, triton.next_power_of_2(max_query_len)))
    grid = (num_seqs, triton.cdiv(max_query_len, block_m), num_heads)
    _prefill_kernel[grid](
        q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, out,
        scale * LOG2E,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1), block_tables.stride(0),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), k_cache.shape[1],
        GROUP=num_heads // k_cache.shape[2], HEAD_DIM=head_dim, HEAD_DIM_PAD=triton.next_power_of_2(head_dim),
        BLOCK_M=block_m, BLOCK_N=block_n, **dot_dtype_args(q.dtype, _prefill_kernel),
        **launch_options(num_warps, num_stages),
    )
    return out
