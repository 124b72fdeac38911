"""The torch references (also the CPU production path) against transformers and naive per-token loops."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import velollm.kernels as K
from velollm.config import RopeScaling
from velollm.kernels import decode_attention as da, prefill_attention as pa, rope


def _naive_attention(q_tok, k_cache, v_cache, table, num_kv, scale):
    """One query token [Hq, D] over the first num_kv cache positions of a block table, token by token."""
    block_size = k_cache.shape[1]
    group = q_tok.shape[0] // k_cache.shape[2]
    out = torch.empty(q_tok.shape, dtype=torch.float32)
    for h in range(q_tok.shape[0]):
        keys = [k_cache[table[p // block_size], p % block_size, h // group].float() for p in range(num_kv)]
        vals = [v_cache[table[p // block_size], p % block_size, h // group].float() for p in range(num_kv)]
        scores = torch.stack([q_tok[h].float() @ kk for kk in keys]) * scale
        w = torch.softmax(scores, 0)
        out[h] = sum(wi * vi for wi, vi in zip(w, vals))
    return out


@pytest.mark.parametrize("hq,hkv", [(4, 4), (8, 2), (8, 1)])
def test_decode_reference_matches_naive(hq, hkv, paged_kv):
    lens = [15, 16, 17, 33, 0]
    k_cache, v_cache, tables = paged_kv(lens, hkv, 64, torch.float32, "cpu")
    q = torch.randn(len(lens), hq, 64)
    got = da.paged_decode_attention_ref(q, k_cache, v_cache, tables, torch.tensor(lens, dtype=torch.int32), 0.125)
    for b, n in enumerate(lens):
        want = _naive_attention(q[b], k_cache, v_cache, tables[b], n, 0.125) if n else torch.zeros(hq, 64)
        torch.testing.assert_close(got[b], want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("hq,hkv", [(4, 4), (8, 2)])
def test_prefill_reference_matches_naive(hq, hkv, paged_kv):
    seqs = [(15, 15), (17, 33), (1, 17)]
    k_cache, v_cache, tables = paged_kv([n for _, n in seqs], hkv, 64, torch.float32, "cpu")
    cu = torch.tensor([0, 15, 32, 33], dtype=torch.int32)
    q = torch.randn(33, hq, 64)
    got = pa.paged_prefill_attention_ref(q, k_cache, v_cache, tables, cu,
                                         torch.tensor([n for _, n in seqs], dtype=torch.int32), 0.125)
    for s, (q_len, kv_len) in enumerate(seqs):
        for i in range(q_len):
            want = _naive_attention(q[cu[s] + i], k_cache, v_cache, tables[s], kv_len - q_len + i + 1, 0.125)
            torch.testing.assert_close(got[cu[s] + i], want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_reference_is_hf_llama(dtype):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    hf = LlamaRMSNorm(96, eps=1e-5).to(dtype)
    hf.weight.data = torch.randn(96).to(dtype)
    x, residual = torch.randn(4, 96).to(dtype), torch.randn(4, 96).to(dtype)
    assert torch.equal(K.rms_norm(x, hf.weight, 1e-5), hf(x))
    normed, new_residual = K.fused_add_rms_norm(x, residual, hf.weight, 1e-5)
    assert torch.equal(new_residual, x + residual) and torch.equal(normed, hf(x + residual))


def test_silu_and_mul_reference_is_hf_mlp_activation():
    x = torch.randn(3, 40).to(torch.bfloat16)
    assert torch.equal(K.silu_and_mul(x), F.silu(x[:, :20]) * x[:, 20:])


@pytest.mark.parametrize("scaling", [None, RopeScaling("llama3", 32.0, 1.0, 4.0, 8192)])
def test_cos_sin_cache_matches_transformers(scaling):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    rope_parameters = {"rope_type": "default", "rope_theta": 500000.0}
    if scaling is not None:
        rope_parameters = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": scaling.factor,
                           "low_freq_factor": scaling.low_freq_factor, "high_freq_factor": scaling.high_freq_factor,
                           "original_max_position_embeddings": scaling.original_max_position_embeddings}
    cfg = LlamaConfig(hidden_size=512, num_attention_heads=4, head_dim=128, max_position_embeddings=131072,
                      rope_theta=500000.0, rope_parameters=rope_parameters, rope_scaling=rope_parameters)
    positions = torch.tensor([[0, 1, 17, 4095, 100_000]])
    cos, sin = LlamaRotaryEmbedding(cfg)(torch.zeros(1, 1, 128), positions)
    cache = rope.build_cos_sin_cache(128, 100_001, 500000.0, scaling)
    got_cos, got_sin = cache[positions[0]].chunk(2, dim=-1)
    torch.testing.assert_close(got_cos, cos[0, :, :64], atol=0, rtol=0)
    torch.testing.assert_close(got_sin, sin[0, :, :64], atol=0, rtol=0)
    if scaling is not None:  # llama3 really changed the low frequencies
        assert not torch.equal(cache, rope.build_cos_sin_cache(128, 100_001, 500000.0, None))


def test_rope_and_cache_reference_matches_hf_rotation_and_per_token_writes():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    q, k, v = torch.randn(5, 4, 64), torch.randn(5, 2, 64), torch.randn(5, 2, 64)
    positions = torch.tensor([0, 3, 9, 9, 40])
    slots = torch.tensor([7, -1, 0, 31, 16])
    cache = rope.build_cos_sin_cache(64, 64, 10000.0)
    k_cache, v_cache = torch.full((2, 16, 2, 64), float("nan")), torch.full((2, 16, 2, 64), float("nan"))
    q_rot, k_rot = K.rope_and_cache(q, k, v, positions, cache, k_cache, v_cache, slots)
    for t in range(5):
        c, s = cache[positions[t]].chunk(2)
        cos, sin = torch.cat([c, c])[None], torch.cat([s, s])[None]
        want_q, want_k = apply_rotary_pos_emb(q[t][None], k[t][None], cos, sin)
        torch.testing.assert_close(q_rot[t], want_q[0], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(k_rot[t], want_k[0], atol=1e-6, rtol=1e-6)
        if slots[t] >= 0:
            block, off = divmod(int(slots[t]), 16)
            assert torch.equal(k_cache[block, off], k_rot[t]) and torch.equal(v_cache[block, off], v[t])
    assert k_cache.isnan().all(-1).all(-1).sum() == 32 - 4  # exactly the 4 real slots were written


def test_dispatch_uses_reference_on_cpu(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the Triton kernel was launched on CPU tensors")

    monkeypatch.setattr(da, "paged_decode_attention_triton", boom)
    q = torch.randn(2, 4, 64)
    assert K.kernel_backend(q) == "torch"
    k_cache, v_cache = torch.randn(3, 16, 2, 64), torch.randn(3, 16, 2, 64)
    tables = torch.tensor([[1, 2], [0, 0]], dtype=torch.int32)
    lens = torch.tensor([20, 3], dtype=torch.int32)
    assert torch.equal(K.paged_decode_attention(q, k_cache, v_cache, tables, lens, 0.1),
                       da.paged_decode_attention_ref(q, k_cache, v_cache, tables, lens, 0.1))


def test_import_does_not_initialise_cuda():
    code = "import torch, velollm.kernels; assert not torch.cuda.is_initialized(); print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize("hq,hkv,n,kv_len", [(8, 1, 1, 300), (4, 2, 37, 1000), (6, 6, 129, 130), (8, 2, 64, 64)])
def test_causal_over_prefix_matches_bottom_right_mask(hq, hkv, n, kv_len):
    """The CPU split (prefix unmasked + own tokens causal, merged by log-sum-exp) is the masked softmax."""
    q, k, v = torch.randn(1, hq, n, 16), torch.randn(1, hkv, kv_len, 16), torch.randn(1, hkv, kv_len, 16)
    mask = torch.arange(kv_len)[None, :] <= torch.arange(kv_len - n, kv_len)[:, None]
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3, enable_gqa=hq != hkv)
    torch.testing.assert_close(pa.causal_over_prefix(q, k, v, 0.3), want, atol=1e-5, rtol=1e-5)
