"""Paged decode attention: one query token per sequence against its paged KV (GQA, split-K)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from velollm.kernels._triton import dot_dtype_args, launch_options, output_buffer, tl, triton
from velollm.kernels.fp8 import FP8_KV_DTYPE, to_float


def paged_decode_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """q [B, Hq, D] -> out [B, Hq, D]; query head h reads kv head h // (Hq // Hkv). Float32 softmax.

    One exact-length gather per sequence: no padding to the longest context and no stale slot is ever
    read (so no masking pass), which on CPU beats one padded batched call by ~1.7x. Rows with
    context_len 0 (batch padding) return zeros.
    """
    out = torch.zeros_like(q)
    block_size = k_cache.shape[1]
    tables = block_tables.long()
    gqa = q.shape[1] != k_cache.shape[2]
    for row, length in enumerate(context_lens.tolist()):
        if length == 0:
            continue
        blocks = tables[row, : -(-length // block_size)]
        k = to_float(k_cache[blocks].flatten(0, 1)[:length]).transpose(0, 1)[None]  # [1, Hkv, L, D]
        v = to_float(v_cache[blocks].flatten(0, 1)[:length]).transpose(0, 1)[None]
        o = F.scaled_dot_product_attention(q[row].float()[None, :, None, :], k, v, scale=scale, enable_gqa=gqa)
        out[row] = o[0, :, 0].to(q.dtype)
    return out


LOG2E = 1.4426950408889634


# Ints that change with the batch are not specialized on (== 1, divisible by 16): each specialization is
# one more compile, and a first request that meets one waits for it. They only index scalars.
@triton.jit(do_not_specialize=["bt_stride", "num_splits"])
def _decode_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, context_lens_ptr,
    out_ptr, m_ptr, l_ptr, acc_ptr, counter_ptr,
    qk_scale, tokens_per_split,
    q_b_stride, q_h_stride, bt_stride,
    cache_block_stride, cache_slot_stride, cache_h_stride,
    out_b_stride, out_h_stride,
    block_size, num_splits,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr, SINGLE_SPLIT: tl.constexpr, DOT_PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
    FUSED_REDUCE: tl.constexpr = False,
):
    """One program = one sequence x one KV head x one split of the context; all GROUP query heads of
    that KV head share every K/V tile loaded, so the cache is read once per KV head.

    FUSED_REDUCE (split runs only): splits past the context exit at once, and the last live split of a
    (sequence, KV head) to finish merges the partials itself (_merge_splits), so no reduce kernel runs."""
    b = tl.program_id(0).to(tl.int64)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    ctx = tl.load(context_lens_ptr + b).to(tl.int32)  # int32 or int64 input; loop bounds need one type
    live = tl.cdiv(ctx, tokens_per_split)  # splits holding part of the context
    if FUSED_REDUCE:
        if split >= tl.maximum(live, 1):  # split 0 of an empty row stays to write its zeros
            return
    start = split * tokens_per_split
    end = tl.minimum(start + tokens_per_split, ctx)

    g = tl.arange(0, GROUP_PAD)
    d = tl.arange(0, HEAD_DIM_PAD)
    heads = kvh * GROUP + g
    q_mask = (g[:, None] < GROUP) & (d[None, :] < HEAD_DIM)
    q = tl.load(q_ptr + b * q_b_stride + heads[:, None] * q_h_stride + d[None, :], mask=q_mask, other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)

    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM_PAD], tl.float32)
    n = tl.arange(0, BLOCK_N)
    kv_head_off = kvh * cache_h_stride
    for tok0 in range(start, end, BLOCK_N):
        pos = tok0 + n
        valid = pos < end
        block = tl.load(block_tables_ptr + b * bt_stride + pos // block_size, mask=valid, other=0).to(tl.int64)
        row = block * cache_block_stride + (pos % block_size) * cache_slot_stride + kv_head_off
        kv_mask = valid[:, None] & (d[None, :] < HEAD_DIM)
        # To q's dtype (float32 under DOT_F32): a no-op for a cache in the model dtype, an fp8 cache's upcast.
        k = tl.load(k_cache_ptr + row[:, None] + d[None, :], mask=kv_mask, other=0.0).to(q.dtype)
        v = tl.load(v_cache_ptr + row[:, None] + d[None, :], mask=kv_mask, other=0.0).to(q.dtype)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # [GROUP_PAD, BLOCK_N], log2 units
        s = tl.where(valid[None, :], s, float("-inf"))
        m_i, l_i, acc = online_softmax_step(s, v, m_i, l_i, acc, DOT_PRECISION)

    out_mask = q_mask
    o_ptr = out_ptr + b * out_b_stride + heads[:, None] * out_h_stride + d[None, :]
    if SINGLE_SPLIT:
        # Empty sequences (batch padding) have l_i == 0 and produce zeros.
        o = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(o_ptr, o.to(out_ptr.dtype.element_ty), mask=out_mask)
    elif not FUSED_REDUCE:
        _store_partials(m_ptr, l_ptr, acc_ptr, m_i, l_i, acc, (b * (GROUP * tl.num_programs(1)) + heads) * num_splits
                        + split, g, d, out_mask, GROUP, HEAD_DIM_PAD)
    elif live <= 1:  # the only live split (or an empty row): nothing to merge
        o = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(o_ptr, o.to(out_ptr.dtype.element_ty), mask=out_mask)
    else:
        seq_parts = (b * (GROUP * tl.num_programs(1)) + heads) * num_splits  # [GROUP_PAD]
        _store_partials(m_ptr, l_ptr, acc_ptr, m_i, l_i, acc, seq_parts + split, g, d, out_mask, GROUP, HEAD_DIM_PAD)
        # Every thread's partials are written before one thread publishes them (release); the program that
        # counts last acquires all of them, resets the counter for the next launch, and merges.
        tl.debug_barrier()
        counter = counter_ptr + b * tl.num_programs(1) + kvh
        if tl.atomic_add(counter, 1, sem="acq_rel", scope="gpu") == live - 1:
            tl.store(counter, 0)
            _merge_splits(o_ptr, m_ptr, l_ptr, acc_ptr, seq_parts, live, g, d, out_mask, GROUP, GROUP_PAD,
                          HEAD_DIM_PAD)


@triton.jit
def online_softmax_step(s, v, m_i, l_i, acc, DOT_PRECISION: tl.constexpr):
    """One KV tile of flash attention's online softmax: `s` the tile's scores (log2 units, masked to
    -inf), `v` its values; the running max, denominator and output accumulator, updated."""
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    p = tl.math.exp2(s - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return m_new, l_i, acc


@triton.jit
def _store_partials(m_ptr, l_ptr, acc_ptr, m_i, l_i, acc, part, g, d, out_mask,
                    GROUP: tl.constexpr, HEAD_DIM_PAD: tl.constexpr):
    tl.store(m_ptr + part, m_i, mask=g < GROUP)
    tl.store(l_ptr + part, l_i, mask=g < GROUP)
    tl.store(acc_ptr + part[:, None] * HEAD_DIM_PAD + d[None, :], acc, mask=out_mask)


@triton.jit
def _merge_splits(o_ptr, m_ptr, l_ptr, acc_ptr, seq_parts, live, g, d, out_mask,
                  GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM_PAD: tl.constexpr):
    """Online merge of the `live` split partials (m, l, acc) of GROUP query heads; loads bypass L1 (.cg),
    since other SMs wrote them during this launch."""
    m_run = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_run = tl.zeros([GROUP_PAD], tl.float32)
    acc_run = tl.zeros([GROUP_PAD, HEAD_DIM_PAD], tl.float32)
    for s in range(live):
        # Live splits saw at least one key: m is finite for real heads; padding heads read 0.
        m_s = tl.load(m_ptr + seq_parts + s, mask=g < GROUP, other=0.0, cache_modifier=".cg")
        l_s = tl.load(l_ptr + seq_parts + s, mask=g < GROUP, other=0.0, cache_modifier=".cg")
        acc_s = tl.load(acc_ptr + (seq_parts + s)[:, None] * HEAD_DIM_PAD + d[None, :], mask=out_mask, other=0.0,
                        cache_modifier=".cg")
        m_new = tl.maximum(m_run, m_s)
        alpha = tl.math.exp2(m_run - m_new)
        beta = tl.math.exp2(m_s - m_new)
        l_run = l_run * alpha + l_s * beta
        acc_run = acc_run * alpha[:, None] + acc_s * beta[:, None]
        m_run = m_new
    o = acc_run / tl.where(l_run > 0, l_run, 1.0)[:, None]
    tl.store(o_ptr, o.to(o_ptr.dtype.element_ty), mask=out_mask)


@triton.jit(do_not_specialize=["num_splits"])
def _reduce_kernel(
    out_ptr, m_ptr, l_ptr, acc_ptr, out_b_stride, out_h_stride, num_heads, num_splits,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, SPLITS_PAD: tl.constexpr,
):
    """Merge the per-split softmax partials (m, l, acc) of one (sequence, query head)."""
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    sp = tl.arange(0, SPLITS_PAD)
    d = tl.arange(0, HEAD_DIM_PAD)
    part = (b * num_heads + h) * num_splits + sp
    sp_mask = sp < num_splits
    m = tl.load(m_ptr + part, mask=sp_mask, other=float("-inf"))
    l = tl.load(l_ptr + part, mask=sp_mask, other=0.0)
    acc = tl.load(acc_ptr + part[:, None] * HEAD_DIM_PAD + d[None, :], mask=sp_mask[:, None], other=0.0)
    m_max = tl.max(m, axis=0)
    # Splits past the context have m = -inf; an all-empty row (context 0) gets weight 0 and output 0.
    w = tl.where(m > float("-inf"), tl.math.exp2(m - tl.where(m_max > float("-inf"), m_max, 0.0)), 0.0)
    denom = tl.sum(w * l, axis=0)
    o = tl.sum(w[:, None] * acc, axis=0) / tl.where(denom > 0, denom, 1.0)
    tl.store(out_ptr + b * out_b_stride + h * out_h_stride + d, o.to(out_ptr.dtype.element_ty), mask=d < HEAD_DIM)


def check_paged_inputs(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                        block_tables: torch.Tensor, num_seqs: int) -> None:
    if k_cache.shape != v_cache.shape or k_cache.stride() != v_cache.stride() or k_cache.dim() != 4:
        raise ValueError("k_cache and v_cache must both be [num_blocks, block_size, Hkv, D] with equal strides")
    if k_cache.stride(-1) != 1 or q.stride(-1) != 1:
        raise ValueError("q and the caches need a contiguous head_dim")
    if q.shape[-1] != k_cache.shape[-1] or q.shape[-2] % k_cache.shape[2]:
        raise ValueError(f"q {tuple(q.shape)} does not fit caches {tuple(k_cache.shape)}")
    if k_cache.dtype not in (q.dtype, FP8_KV_DTYPE) or v_cache.dtype != k_cache.dtype:
        raise ValueError(f"q dtype {q.dtype} != cache dtype {k_cache.dtype} (only an fp8 cache may differ)")
    if block_tables.dim() != 2 or block_tables.shape[0] != num_seqs or block_tables.stride(-1) != 1:
        raise ValueError("block_tables must be [num_seqs, max_blocks] with contiguous rows")


def choose_num_splits(batch: int, num_kv_heads: int, max_tokens: int, block_n: int, target_programs: int) -> int:
    """Split the context so batch x kv_heads x splits roughly fills the GPU; static in the shapes only,
    so the launch is CUDA-graph safe (no read of context_lens on the host)."""
    max_chunks = max(1, -(-max_tokens // block_n))
    wanted = max(1, -(-target_programs // max(1, batch * num_kv_heads)))
    return min(max_chunks, wanted, 64)


_SPLIT_COUNTERS: dict[tuple[torch.device, int], torch.Tensor] = {}


def split_counters(device: torch.device, size: int) -> torch.Tensor:
    """Zeroed int32 arrival counters for the fused split merge, one per (sequence, KV head). Each launch
    leaves them at zero again, so launches on one stream share them. Kept for the process: a CUDA graph
    holds their address; a graph capture must find them made by its warm-up run."""
    key = (torch.device(device), size)
    counters = _SPLIT_COUNTERS.get(key)
    if counters is None:
        if key[0].type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("fused split merge: run the decode once before capturing it in a CUDA graph")
        counters = _SPLIT_COUNTERS[key] = torch.zeros(size, dtype=torch.int32, device=device)
    return counters


def paged_decode_attention_triton(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    *,
    out: torch.Tensor | None = None,
    num_splits: int | None = None,
    block_n: int = 64,
    target_programs: int = 512,
    num_warps: int = 4,
    num_stages: int | None = None,
    fused_reduce: bool = False,
) -> torch.Tensor:
    """Triton paged decode. `out` lets CUDA graphs keep a static output buffer; the tuning knobs
    (num_splits, block_n, target_programs, num_warps, num_stages) exist for benchmarks/decode_attention.py.
    `fused_reduce`: with several splits, the last split of each (sequence, KV head) merges the partials
    instead of a second kernel, and splits past the context exit at once (kernels.decode_reduce_fused).

    Defaults from its sweep on an H100 (batch 64, context 2048, bf16): 64-token tiles and one program per
    (sequence, KV head) once that makes 512 programs read 0.98 (8B heads) and 0.91 (1B heads) of the copy
    bandwidth, against 0.90 for 32-token tiles split to 1024 programs."""
    batch, num_heads, head_dim = q.shape
    check_paged_inputs(q, k_cache, v_cache, block_tables, batch)
    if context_lens.shape != (batch,):
        raise ValueError("context_lens must be [num_seqs]")
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = num_heads // num_kv_heads
    max_tokens = block_tables.shape[1] * block_size
    if num_splits is None:
        num_splits = choose_num_splits(batch, num_kv_heads, max_tokens, block_n, target_programs)
    # Each split covers a whole number of BLOCK_N tiles.
    tokens_per_split = -(-max(1, -(-max_tokens // num_splits)) // block_n) * block_n
    num_splits = max(1, -(-max_tokens // tokens_per_split))
    out = output_buffer(out, q.shape, q.dtype, q.device, "out")
    if batch == 0:
        return out
    head_dim_pad = triton.next_power_of_2(head_dim)
    single = num_splits == 1
    parts = (batch, num_heads, num_splits)
    m = l = acc = counters = out  # unused placeholders on the single-split path
    fused = fused_reduce and not single
    if not single:
        m = torch.empty(parts, dtype=torch.float32, device=q.device)
        l = torch.empty(parts, dtype=torch.float32, device=q.device)
        acc = torch.empty((*parts, head_dim_pad), dtype=torch.float32, device=q.device)
    if fused:
        counters = split_counters(q.device, batch * num_kv_heads)
    _decode_kernel[(batch, num_kv_heads, num_splits)](
        q, k_cache, v_cache, block_tables, context_lens,
        out, m, l, acc, counters,
        scale * LOG2E, tokens_per_split,
        q.stride(0), q.stride(1), block_tables.stride(0),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        out.stride(0), out.stride(1),
        block_size, num_splits,
        GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)),
        HEAD_DIM=head_dim, HEAD_DIM_PAD=head_dim_pad,
        BLOCK_N=block_n, SINGLE_SPLIT=single, FUSED_REDUCE=fused,
        **dot_dtype_args(q.dtype, _decode_kernel), **launch_options(num_warps, num_stages),
    )
    if not single and not fused:
        _reduce_kernel[(batch, num_heads)](
            out, m, l, acc, out.stride(0), out.stride(1), num_heads, num_splits,
            HEAD_DIM=head_dim, HEAD_DIM_PAD=head_dim_pad, SPLITS_PAD=triton.next_power_of_2(num_splits),
        )
    return out
