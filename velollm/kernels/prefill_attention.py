"""Causal prefill attention over paged KV: variable-length sequences, cached prefix, GQA."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from velollm.kernels._triton import dot_dtype_args, launch_options, output_buffer, tl, triton
from velollm.kernels.decode_attention import LOG2E, check_paged_inputs, online_softmax_step
from velollm.kernels.fp8 import to_float


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
    block_size = k_cache.shape[1]
    out = torch.empty_like(q)
    starts = cu_seqlens_q.tolist()
    lens = context_lens.tolist()
    for s, kv_len in enumerate(lens):
        start, end = starts[s], starts[s + 1]
        if end == start:
            continue
        blocks = block_tables[s, : -(-kv_len // block_size)].long()
        k = to_float(k_cache[blocks].flatten(0, 1)[:kv_len]).transpose(0, 1)[None]  # [1, Hkv, L, D]
        v = to_float(v_cache[blocks].flatten(0, 1)[:kv_len]).transpose(0, 1)[None]
        o = causal_over_prefix(q[start:end].float().transpose(0, 1)[None], k, v, scale)  # [1, Hq, q_len, D]
        out[start:end] = o[0].transpose(0, 1).to(q.dtype)
    return out


def causal_over_prefix(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """q [1, Hq, n, D] (the last n of L positions) over k / v [1, Hkv, L, D], causally -> [1, Hq, n, D].

    With a cached prefix (n < L), every query sees the whole prefix and its own tokens causally: the two
    parts run unmasked and top-left causal, then merge by their log-sum-exps (as split-K attention does).
    A bottom-right mask [n, L] instead costs building it and reading it in the kernel (~30% of a 186-token
    turn over 6.5k cached tokens on the demo model, benchmarks/context.py's floor) and n x L x 4 bytes.
    4-D inputs: CPU SDPA takes its flash kernel only for batched 4-D tensors; that op shares K/V heads
    across query groups itself.
    """
    n, kv_len = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if n == kv_len:  # no cached prefix: top-left causal is the right alignment
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    if q.device.type != "cpu":
        q_pos = torch.arange(kv_len - n, kv_len, device=q.device)
        mask = torch.arange(kv_len, device=q.device)[None, :] <= q_pos[:, None]  # [n, L]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    prefix, prefix_lse = flash(q, k[:, :, : kv_len - n], v[:, :, : kv_len - n], scale=scale)
    own, own_lse = flash(q, k[:, :, kv_len - n :], v[:, :, kv_len - n :], is_causal=True, scale=scale)
    top = torch.maximum(prefix_lse, own_lse)
    w_prefix, w_own = (prefix_lse - top).exp()[..., None], (own_lse - top).exp()[..., None]
    return (prefix * w_prefix + own * w_own) / (w_prefix + w_own)


@triton.jit
def _attend_tiles(
    q, m_i, l_i, acc, q_pos, lo, hi,
    k_cache_ptr, v_cache_ptr, table_ptr, kv_head_off, qk_scale,
    cache_block_stride, cache_slot_stride, block_size,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr,
    MASKED: tl.constexpr,
):
    """Online softmax over the key tiles [lo, hi) of one query tile. MASKED: the causal diagonal (per-element
    position compare, keys up to hi - 1 only); otherwise every query sees every key of every tile."""
    n = tl.arange(0, BLOCK_N)
    d = tl.arange(0, HEAD_DIM_PAD)
    for tok0 in range(lo, hi, BLOCK_N):
        pos = tok0 + n
        if MASKED:
            kv_valid = pos < hi
            block = tl.load(table_ptr + pos // block_size, mask=kv_valid, other=0).to(tl.int64)
            kv_mask = kv_valid[:, None] & (d[None, :] < HEAD_DIM)
        else:
            block = tl.load(table_ptr + pos // block_size).to(tl.int64)
            kv_mask = d[None, :] < HEAD_DIM
        row = block * cache_block_stride + (pos % block_size) * cache_slot_stride + kv_head_off
        # To q's dtype (float32 under DOT_F32): a no-op for a cache in the model dtype, an fp8 cache's upcast.
        if MASKED or HEAD_DIM != HEAD_DIM_PAD:
            k = tl.load(k_cache_ptr + row[:, None] + d[None, :], mask=kv_mask, other=0.0).to(q.dtype)
            v = tl.load(v_cache_ptr + row[:, None] + d[None, :], mask=kv_mask, other=0.0).to(q.dtype)
        else:  # whole tiles of a power-of-two head: plain loads
            k = tl.load(k_cache_ptr + row[:, None] + d[None, :]).to(q.dtype)
            v = tl.load(v_cache_ptr + row[:, None] + d[None, :]).to(q.dtype)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        if MASKED:
            s = tl.where(kv_valid[None, :] & (pos[None, :] <= q_pos[:, None]), s, float("-inf"))
        m_i, l_i, acc = online_softmax_step(s, v, m_i, l_i, acc, DOT_PRECISION)
    return m_i, l_i, acc


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
    # The last query tiles see the most keys: launched first, they do not trail at the end of the grid.
    m_block = tl.num_programs(1) - 1 - tl.program_id(1)
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
    kv_head_off = (h // GROUP) * cache_h_stride
    table_ptr = block_tables_ptr + seq * bt_stride
    # Causal: no key past the tile's last query (ctx - q_len + (m_block + 1) * BLOCK_M - 1) is read, and the
    # key tiles that end at or before the first query's position are seen whole by every query: no mask.
    first_q = ctx - q_len + m_block * BLOCK_M
    hi = tl.minimum(ctx, first_q + BLOCK_M)
    full_hi = (first_q + 1) // BLOCK_N * BLOCK_N
    m_i, l_i, acc = _attend_tiles(
        q, m_i, l_i, acc, q_pos, 0, full_hi, k_cache_ptr, v_cache_ptr, table_ptr, kv_head_off, qk_scale,
        cache_block_stride, cache_slot_stride, block_size, HEAD_DIM, HEAD_DIM_PAD, BLOCK_N, DOT_PRECISION, False,
    )
    m_i, l_i, acc = _attend_tiles(
        q, m_i, l_i, acc, q_pos, full_hi, hi, k_cache_ptr, v_cache_ptr, table_ptr, kv_head_off, qk_scale,
        cache_block_stride, cache_slot_stride, block_size, HEAD_DIM, HEAD_DIM_PAD, BLOCK_N, DOT_PRECISION, True,
    )
    o = acc / l_i[:, None]
    o_ptr = out_ptr + (q_start + m[:, None]) * out_t_stride + h * out_h_stride + d[None, :]
    tl.store(o_ptr, o.to(out_ptr.dtype.element_ty), mask=q_mask)


# Tiles (block_m, block_n, num_warps) by head size and longest query of the step, from the sweep in
# benchmarks/prefill_attention.py: benchmarks/GPU_NOTES.md run 1 (H100, bf16, Llama-3.1-8B heads), best_cfg
# of 16 x 512 fresh prompts: 64 / 32 / 4; of 16 x 256 after a 768-token prefix: 128 / 32 / 4. Head sizes not
# swept keep the earlier default. A bucket is (longest query up to, tile); the last bucket has no bound.
PREFILL_TILES: dict[int, tuple[tuple[int | None, tuple[int, int, int]], ...]] = {
    128: ((256, (128, 32, 4)), (None, (64, 32, 4))),
}
DEFAULT_TILE = (64, 64, 4)


def prefill_tile(head_dim: int, max_query_len: int) -> tuple[int, int, int]:
    """(block_m, block_n, num_warps) for this head size and longest query (see PREFILL_TILES)."""
    for bound, tile in PREFILL_TILES.get(head_dim, ()):
        if bound is None or max_query_len <= bound:
            return tile
    return DEFAULT_TILE


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
    block_m: int | None = None,
    block_n: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> torch.Tensor:
    """`max_query_len` (if the caller knows it) saves the host read of cu_seqlens_q; the tile and launch
    knobs exist for benchmarks/prefill_attention.py and tests (unset: prefill_tile's table)."""
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
    tile = prefill_tile(head_dim, max_query_len)
    block_m, block_n, num_warps = block_m or tile[0], block_n or tile[1], num_warps or tile[2]
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
