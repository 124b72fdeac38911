"""Paged decode attention Triton kernel (GQA, split-K + reduce) against its torch reference."""

from __future__ import annotations

import pytest
import torch

from velollm.kernels import decode_attention as da

from .conftest import ON_GPU

# float32 runs IEEE dots; bfloat16 rounds p to bf16 before p @ V (as flash attention does) and the
# output once, so errors stay within a few bf16 units of outputs of magnitude ~1.
TOL = {
    torch.float32: dict(atol=3e-5, rtol=3e-5),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
    torch.float16: dict(atol=3e-3, rtol=3e-3),
}
HEADS = [(2, 2), (8, 2), (8, 1)]  # (Hq, Hkv): GQA 1, 4, 8
# On and across the 16-token block boundaries, a single token, and an empty (batch padding) row.
CONTEXT_LENS = [15, 16, 17, 33, 1, 0]
SPLITS = [(1, 32), (None, 32), (None, 64), (4, 16)]  # (num_splits, block_n): single pass, auto, split-K


def _run(q, k_cache, v_cache, block_tables, context_lens, poison, **kw):
    out = poison(q.shape, q.dtype, q.device.type)
    got = da.paged_decode_attention_triton(q, k_cache, v_cache, block_tables, context_lens, q.shape[-1] ** -0.5,
                                           out=out, **kw)
    assert got.data_ptr() == out.data_ptr()
    return got


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("hq,hkv", HEADS)
@pytest.mark.parametrize("num_splits,block_n", SPLITS)
def test_decode_attention(num_splits, block_n, hq, hkv, head_dim, dtype, device, paged_kv, poison):
    k_cache, v_cache, block_tables = paged_kv(CONTEXT_LENS, hkv, head_dim, dtype, device)
    context_lens = torch.tensor(CONTEXT_LENS, dtype=torch.int32, device=device)
    q = torch.randn(len(CONTEXT_LENS), hq, head_dim, device=device).to(dtype)
    got = _run(q, k_cache, v_cache, block_tables, context_lens, poison, num_splits=num_splits, block_n=block_n)
    want = da.paged_decode_attention_ref(q, k_cache, v_cache, block_tables, context_lens, head_dim ** -0.5)
    assert not want.isnan().any()
    torch.testing.assert_close(got, want, **TOL[dtype])
    assert torch.equal(got[-1], torch.zeros_like(got[-1]))  # context 0


def test_decode_attention_float16_long_split(device, paged_kv, poison):
    lens = [200, 129, 7]
    k_cache, v_cache, block_tables = paged_kv(lens, 2, 64, torch.float16, device)
    context_lens = torch.tensor(lens, dtype=torch.int32, device=device)
    q = torch.randn(3, 8, 64, device=device).to(torch.float16)
    got = _run(q, k_cache, v_cache, block_tables, context_lens, poison, num_splits=5, block_n=16)
    want = da.paged_decode_attention_ref(q, k_cache, v_cache, block_tables, context_lens, 64 ** -0.5)
    torch.testing.assert_close(got, want, **TOL[torch.float16])


def test_num_splits_depends_on_shapes_only():
    # Fixed by shapes, so a captured CUDA graph stays valid whatever the context lengths are.
    assert da.choose_num_splits(64, 8, 2048, 32, 1024) == 2
    assert da.choose_num_splits(1, 8, 4096, 32, 1024) == 64
    assert da.choose_num_splits(1, 8, 32, 32, 1024) == 1


def test_decode_rejects_dtype_mismatch(device):
    cache = torch.zeros(2, 16, 2, 64, device=device, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="dtype"):
        da.paged_decode_attention_triton(torch.zeros(1, 2, 64, device=device), cache, cache,
                                         torch.zeros(1, 1, dtype=torch.int32, device=device),
                                         torch.ones(1, dtype=torch.int32, device=device), 0.1)


def test_decode_accepts_int64_lengths_and_tables(device, paged_kv, poison):
    lens = [17, 40]
    k_cache, v_cache, block_tables = paged_kv(lens, 2, 64, torch.float32, device)
    q = torch.randn(2, 8, 64, device=device)
    context_lens = torch.tensor(lens, device=device)  # int64
    got = _run(q, k_cache, v_cache, block_tables.long(), context_lens, poison, num_splits=2, block_n=16)
    want = da.paged_decode_attention_ref(q, k_cache, v_cache, block_tables, context_lens, 0.125)
    torch.testing.assert_close(got, want, **TOL[torch.float32])


@pytest.mark.parametrize("hq,hkv", HEADS)
@pytest.mark.parametrize("num_splits,block_n", [(4, 16), (8, 16), (None, 32)])
def test_decode_attention_fused_reduce(num_splits, block_n, hq, hkv, device, paged_kv, poison):
    """The last live split merges (kernels.decode_reduce_fused): several live splits, one live split of many,
    an empty row; twice in a row, since the arrival counters must be back at zero after each launch."""
    lens = [200, 129, 7, 16, 1, 0]
    k_cache, v_cache, block_tables = paged_kv(lens, hkv, 64, torch.bfloat16, device)
    context_lens = torch.tensor(lens, dtype=torch.int32, device=device)
    want = None
    for _ in range(2):
        q = torch.randn(len(lens), hq, 64, device=device).to(torch.bfloat16)
        got = _run(q, k_cache, v_cache, block_tables, context_lens, poison, num_splits=num_splits, block_n=block_n,
                   fused_reduce=True)
        want = da.paged_decode_attention_ref(q, k_cache, v_cache, block_tables, context_lens, 64 ** -0.5)
        torch.testing.assert_close(got, want, **TOL[torch.bfloat16])
        assert torch.equal(got[-1], torch.zeros_like(got[-1]))
        assert not da.split_counters(q.device, len(lens) * hkv).any()


def test_decode_reduce_fused_switch(monkeypatch):
    from velollm import kernels

    monkeypatch.delenv(kernels.DECODE_FUSED_REDUCE_ENV, raising=False)
    assert not kernels.KernelSwitches.from_env().decode_fused_reduce  # off by default until a GPU run decides
    monkeypatch.setenv(kernels.DECODE_FUSED_REDUCE_ENV, "1")
    assert kernels.KernelSwitches.from_env().decode_fused_reduce


@pytest.mark.skipif(not ON_GPU, reason="the race between real concurrent splits needs a GPU")
def test_decode_attention_fused_reduce_gpu_graph(paged_kv):
    """Batch 1 as the decode graph runs it (64 splits of an 8192-token table, 8B heads), replayed from a
    CUDA graph: every replay merges all live splits and leaves the counters at zero."""
    lens = [1000]
    k_cache, v_cache, block_tables = paged_kv(lens, 8, 128, torch.bfloat16, "cuda")
    tables = torch.zeros(1, 512, dtype=torch.int32, device="cuda")
    tables[:, : block_tables.shape[1]] = block_tables
    context_lens = torch.tensor(lens, dtype=torch.int32, device="cuda")
    q = torch.randn(1, 32, 128, device="cuda").to(torch.bfloat16)
    out = torch.empty_like(q)
    run = lambda: da.paged_decode_attention_triton(q, k_cache, v_cache, tables, context_lens, 128 ** -0.5, out=out,
                                                   fused_reduce=True)
    run()  # compiles, and makes the counters outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    for _ in range(20):
        q.copy_(torch.randn_like(q))
        graph.replay()
        want = da.paged_decode_attention_ref(q, k_cache, v_cache, tables, context_lens, 128 ** -0.5)
        torch.testing.assert_close(out, want, **TOL[torch.bfloat16])
    assert not da.split_counters(q.device, 8).any()
