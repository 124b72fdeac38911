"""Paged prefill attention Triton kernel (varlen, causal, cached prefix, GQA) against its torch reference."""

from __future__ import annotations

import pytest
import torch

from velollm.kernels import prefill_attention as pa

TOL = {
    torch.float32: dict(atol=3e-5, rtol=3e-5),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
}
HEADS = [(2, 2), (8, 2), (8, 1)]
# (query tokens this step, total KV length): fresh prompts on and across 16-token block boundaries,
# a prefix-cache hit (17 new after 16 cached), a one-token chunk, and a chunk in the middle of a prompt.
SEQS = [(15, 15), (16, 16), (17, 33), (1, 17), (33, 33), (5, 21)]


# Longer steps for the causal diagonal: several whole key tiles below it per query tile, prefixes that end
# inside a key tile, a one-token chunk, and query tiles whose diagonal spans several key tiles (or one key
# tile holding keys past the tile's last query).
# Prefixes of 14, 30 and 62 put a query one key short of a key-tile end (16, 32, 64), where a tile taken
# whole one step too early would show it the next key.
DIAGONAL_SEQS = [(70, 70), (40, 77), (1, 50), (23, 23), (33, 49), (100, 100), (17, 129), (30, 44), (20, 50),
                 (9, 71)]


def _inputs(hq, hkv, head_dim, dtype, device, paged_kv, seqs=SEQS):
    q_lens = [n for n, _ in seqs]
    kv_lens = [n for _, n in seqs]
    k_cache, v_cache, block_tables = paged_kv(kv_lens, hkv, head_dim, dtype, device)
    cu = torch.tensor([0] + q_lens, dtype=torch.int32).cumsum(0).to(torch.int32).to(device)
    q = torch.randn(sum(q_lens), hq, head_dim, device=device).to(dtype)
    context_lens = torch.tensor(kv_lens, dtype=torch.int32, device=device)
    return q, k_cache, v_cache, block_tables, cu, context_lens


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("hq,hkv", HEADS)
def test_prefill_attention(hq, hkv, head_dim, dtype, device, paged_kv, poison):
    q, k_cache, v_cache, block_tables, cu, context_lens = _inputs(hq, hkv, head_dim, dtype, device, paged_kv)
    out = poison(q.shape, dtype, device)
    got = pa.paged_prefill_attention_triton(q, k_cache, v_cache, block_tables, cu, context_lens,
                                            head_dim ** -0.5, out=out)
    assert got.data_ptr() == out.data_ptr()
    want = pa.paged_prefill_attention_ref(q, k_cache, v_cache, block_tables, cu, context_lens, head_dim ** -0.5)
    torch.testing.assert_close(got, want, **TOL[dtype])


@pytest.mark.parametrize("block_m,block_n", [(16, 16), (16, 32)])
def test_prefill_attention_small_tiles(block_m, block_n, device, paged_kv, poison):
    # Several query tiles per sequence and KV tiles that end inside a block.
    q, k_cache, v_cache, block_tables, cu, context_lens = _inputs(8, 2, 64, torch.float32, device, paged_kv)
    out = poison(q.shape, q.dtype, device)
    got = pa.paged_prefill_attention_triton(q, k_cache, v_cache, block_tables, cu, context_lens, 0.125,
                                            out=out, max_query_len=33, block_m=block_m, block_n=block_n)
    want = pa.paged_prefill_attention_ref(q, k_cache, v_cache, block_tables, cu, context_lens, 0.125)
    torch.testing.assert_close(got, want, **TOL[torch.float32])


@pytest.mark.parametrize("block_m,block_n", [(16, 16), (32, 16), (16, 64), (64, 32), (128, 32)])
@pytest.mark.parametrize("hq,hkv,head_dim", [(4, 1, 64), (2, 2, 48)])
def test_prefill_attention_causal_diagonal(block_m, block_n, hq, hkv, head_dim, device, paged_kv, poison):
    # Unmasked whole tiles below the diagonal, masked tiles on it, none above; head 48 pads to 64.
    q, k_cache, v_cache, block_tables, cu, context_lens = _inputs(hq, hkv, head_dim, torch.float32, device,
                                                                  paged_kv, DIAGONAL_SEQS)
    out = poison(q.shape, q.dtype, device)
    got = pa.paged_prefill_attention_triton(q, k_cache, v_cache, block_tables, cu, context_lens, 0.1, out=out,
                                            max_query_len=100, block_m=block_m, block_n=block_n)
    want = pa.paged_prefill_attention_ref(q, k_cache, v_cache, block_tables, cu, context_lens, 0.1)
    torch.testing.assert_close(got, want, **TOL[torch.float32])


def test_prefill_tile_table():
    assert pa.prefill_tile(128, 512) == (64, 32, 4)  # GPU_NOTES run 1: 16 x 512 fresh prompts
    assert pa.prefill_tile(128, 256) == (128, 32, 4)  # 16 x 256 chunks after a prefix
    assert pa.prefill_tile(64, 512) == pa.DEFAULT_TILE


def test_prefill_rejects_bad_cu_seqlens(device):
    cache = torch.zeros(2, 16, 2, 64, device=device)
    with pytest.raises(ValueError, match="cu_seqlens_q"):
        pa.paged_prefill_attention_triton(torch.zeros(3, 2, 64, device=device), cache, cache,
                                          torch.zeros(1, 1, dtype=torch.int32, device=device),
                                          torch.tensor([0, 3, 3], dtype=torch.int32, device=device),
                                          torch.tensor([3], dtype=torch.int32, device=device), 0.1)
