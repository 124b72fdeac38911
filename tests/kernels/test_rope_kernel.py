"""RoPE + KV-cache write Triton kernel against its torch reference."""

from __future__ import annotations

import pytest
import torch

from velollm.config import RopeScaling
from velollm.kernels import rope

# Rotation is float32 math on both sides; bfloat16/float16 outputs may differ by one unit in the last
# place (the CPU interpreter truncates fp32 -> bf16, the GPU rounds to nearest).
TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
}
LLAMA3 = RopeScaling("llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                     original_max_position_embeddings=64)
CASES = [  # (num_q_heads, num_kv_heads, head_dim, rope_scaling)
    (4, 4, 64, None),
    (8, 2, 128, LLAMA3),
    (8, 1, 64, LLAMA3),
    (6, 2, 80, None),  # head_dim whose half is not a power of two
]


def _qkv(num_tokens, hq, hkv, d, dtype, device):
    # q/k/v as strided views of one fused projection output, as the model produces them.
    qkv = torch.randn(num_tokens, (hq + 2 * hkv) * d, device=device).to(dtype)
    q, k, v = qkv.split([hq * d, hkv * d, hkv * d], dim=-1)
    return q.view(num_tokens, hq, d), k.view(num_tokens, hkv, d), v.view(num_tokens, hkv, d)


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("hq,hkv,d,scaling", CASES)
def test_rope_and_cache(hq, hkv, d, scaling, dtype, device, poison):
    block_size, num_blocks, num_tokens = 16, 5, 17
    q, k, v = _qkv(num_tokens, hq, hkv, d, dtype, device)
    cos_sin = rope.build_cos_sin_cache(d, 4096, 10000.0, scaling).to(device)
    positions = torch.randint(0, 4096, (num_tokens,), device=device)
    slots = torch.randperm(num_blocks * block_size)[:num_tokens]
    slots[[0, 5, 16]] = -1  # padding tokens, first and last included
    slots = slots.to(device)
    k_cache, v_cache = (poison((num_blocks, block_size, hkv, d), dtype, device) for _ in range(2))
    q_out, k_out = poison(q.shape, dtype, device), poison(k.shape, dtype, device)

    got_q, got_k = rope.rope_and_cache_triton(q, k, v, positions, cos_sin, k_cache, v_cache, slots,
                                              q_out=q_out, k_out=k_out)
    ref_k_cache, ref_v_cache = (poison(k_cache.shape, dtype, device) for _ in range(2))
    want_q, want_k = rope.rope_and_cache_ref(q, k, v, positions, cos_sin, ref_k_cache, ref_v_cache, slots)

    assert got_q.data_ptr() == q_out.data_ptr() and got_k.data_ptr() == k_out.data_ptr()
    torch.testing.assert_close(got_q, want_q, **TOL[dtype])
    torch.testing.assert_close(got_k, want_k, **TOL[dtype])
    valid = slots >= 0
    flat_k, flat_v = k_cache.view(-1, hkv, d), v_cache.view(-1, hkv, d)
    # The cache holds exactly what the kernel returned, V is copied bit for bit, and nothing else is touched.
    assert torch.equal(flat_k[slots[valid]], got_k[valid])
    assert torch.equal(flat_v[slots[valid]], v[valid])
    untouched = torch.ones(flat_k.shape[0], dtype=torch.bool, device=device)
    untouched[slots[valid]] = False
    assert flat_k[untouched].isnan().all() and flat_v[untouched].isnan().all()
    assert torch.equal(ref_v_cache.isnan(), v_cache.isnan())


def test_rope_rejects_mismatched_cache(device):
    q = torch.randn(2, 4, 64, device=device)
    k = v = torch.randn(2, 2, 64, device=device)
    cache = torch.zeros(3, 16, 4, 64, device=device)  # 4 kv heads, k has 2
    with pytest.raises(ValueError, match="caches"):
        rope.rope_and_cache_triton(q, k, v, torch.zeros(2, dtype=torch.long, device=device),
                                   rope.build_cos_sin_cache(64, 8, 10000.0).to(device), cache, cache.clone(),
                                   torch.zeros(2, dtype=torch.long, device=device))
