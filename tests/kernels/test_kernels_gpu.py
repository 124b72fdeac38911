"""GPU-only: the dispatch takes the Triton path on CUDA, real model shapes, CUDA-graph capture."""

from __future__ import annotations

import pytest
import torch

import velollm.kernels as K
from velollm.kernels import activation, decode_attention as da, norm, prefill_attention as pa, rope

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

BF16_TOL = dict(atol=2e-2, rtol=2e-2)


def _boom(*args, **kwargs):
    raise AssertionError("the torch reference ran on CUDA tensors")


def test_dispatch_runs_triton_on_cuda(monkeypatch, paged_kv):
    for module, name in [(norm, "rms_norm_ref"), (norm, "fused_add_rms_norm_ref"), (activation, "silu_and_mul_ref"),
                         (rope, "rope_and_cache_ref"), (da, "paged_decode_attention_ref"),
                         (pa, "paged_prefill_attention_ref")]:
        monkeypatch.setattr(module, name, _boom)
    dev, dt = "cuda", torch.bfloat16
    x = torch.randn(4, 256, device=dev, dtype=dt)
    w = torch.ones(256, device=dev, dtype=dt)
    K.rms_norm(x, w, 1e-6)
    K.fused_add_rms_norm(x, x, w, 1e-6)
    K.silu_and_mul(x)
    k_cache, v_cache, tables = paged_kv([20, 5], 2, 64, dt, dev)
    q, k = torch.randn(2, 8, 64, device=dev, dtype=dt), torch.randn(2, 2, 64, device=dev, dtype=dt)
    cos_sin = K.build_cos_sin_cache(64, 64, 10000.0).to(dev)
    K.rope_and_cache(q, k, k, torch.tensor([3, 4], device=dev), cos_sin, k_cache, v_cache,
                     torch.tensor([-1, -1], device=dev))
    lens = torch.tensor([20, 5], dtype=torch.int32, device=dev)
    K.paged_decode_attention(q, k_cache, v_cache, tables, lens, 0.125)
    K.paged_prefill_attention(q, k_cache, v_cache, tables, torch.tensor([0, 1, 2], dtype=torch.int32, device=dev),
                              lens, 0.125)


def test_decode_llama8b_shapes_long_context(paged_kv):
    lens = torch.randint(1, 2049, (16,)).tolist()
    k_cache, v_cache, tables = paged_kv(lens, 8, 128, torch.bfloat16, "cuda")
    q = torch.randn(16, 32, 128, device="cuda", dtype=torch.bfloat16)
    context_lens = torch.tensor(lens, dtype=torch.int32, device="cuda")
    got = K.paged_decode_attention(q, k_cache, v_cache, tables, context_lens, 128 ** -0.5)
    want = da.paged_decode_attention_ref(q, k_cache, v_cache, tables, context_lens, 128 ** -0.5)
    torch.testing.assert_close(got, want, **BF16_TOL)


def test_prefill_llama8b_shapes_with_prefix(paged_kv):
    seqs = [(512, 512), (300, 1000), (1, 77), (129, 129)]
    k_cache, v_cache, tables = paged_kv([n for _, n in seqs], 8, 128, torch.bfloat16, "cuda")
    q_lens = [n for n, _ in seqs]
    cu = torch.tensor([0] + q_lens).cumsum(0).to(torch.int32).cuda()
    q = torch.randn(sum(q_lens), 32, 128, device="cuda", dtype=torch.bfloat16)
    context_lens = torch.tensor([n for _, n in seqs], dtype=torch.int32, device="cuda")
    got = K.paged_prefill_attention(q, k_cache, v_cache, tables, cu, context_lens, 128 ** -0.5, max_query_len=512)
    want = pa.paged_prefill_attention_ref(q, k_cache, v_cache, tables, cu, context_lens, 128 ** -0.5)
    torch.testing.assert_close(got, want, **BF16_TOL)


def test_decode_attention_replays_in_a_cuda_graph(paged_kv):
    lens = [300, 40, 1, 1000]
    k_cache, v_cache, tables = paged_kv(lens, 2, 64, torch.bfloat16, "cuda")
    q = torch.randn(4, 8, 64, device="cuda", dtype=torch.bfloat16)
    context_lens = torch.tensor(lens, dtype=torch.int32, device="cuda")
    out = torch.empty_like(q)
    da.paged_decode_attention_triton(q, k_cache, v_cache, tables, context_lens, 0.125, out=out)  # compile
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        da.paged_decode_attention_triton(q, k_cache, v_cache, tables, context_lens, 0.125, out=out)
    # New inputs written in place: shorter contexts and fresh queries, same buffers.
    context_lens.copy_(torch.tensor([299, 17, 0, 1000], dtype=torch.int32))
    q.copy_(torch.randn_like(q))
    graph.replay()
    torch.cuda.synchronize()
    want = da.paged_decode_attention_ref(q, k_cache, v_cache, tables, context_lens, 0.125)
    torch.testing.assert_close(out, want, **BF16_TOL)
