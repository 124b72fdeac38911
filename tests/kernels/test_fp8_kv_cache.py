"""fp8 (e4m3) KV cache: the write (rope_and_cache) and the paged attention reads, Triton against references.

Two comparisons per read kernel:
- Triton on the fp8 cache vs the torch reference on the same fp8 cache: the same stored values, so the
  kernels' usual tolerances (tests/kernels/test_*_attention_kernel.py) apply.
- Either of them vs attention over the unquantized cache: the error fp8 storage costs. e4m3 keeps 3
  mantissa bits, so a stored value is off by at most 2^-4 of itself (half a step of 2^-3), or 2^-10
  absolute below 2^-6 (subnormals). From that, per query, a worst-case bound (`_fp8_error_bound`):
  V errors move the output by at most max|dv|; K errors move each score by at most
  |dq.k| <= scale * sum_i |q_i| (2^-4 |k_i| + 2^-10), and softmax turns a score shift of at most e into
  an L1 change of the weights of at most 2 (exp(2e) - 1), each weight moving an output by <= max|v|.
"""

from __future__ import annotations

import math

import pytest
import torch

from velollm.kernels import decode_attention as da
from velollm.kernels import prefill_attention as pa
from velollm.kernels import rope
from velollm.kernels.fp8 import FP8_KV_DTYPE, FP8_MAX, to_cache_dtype, to_float

# Same stored values on both sides: the read kernels' own tolerances for their compute dtype.
TOL = {torch.float32: dict(atol=3e-5, rtol=3e-5), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}
REL, SUB = 2.0**-4, 2.0**-10  # e4m3 rounding: relative error of normals, absolute error of subnormals


def _to_fp8(*caches: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(to_cache_dtype(c, FP8_KV_DTYPE) for c in caches)


def _rows(cache: torch.Tensor, block_tables: torch.Tensor, row: int, length: int) -> torch.Tensor:
    """[length, Hkv, D] float32 of one sequence."""
    bs = cache.shape[1]
    return cache[block_tables[row, : -(-length // bs)].long()].flatten(0, 1)[:length].float()


def _fp8_error_bound(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """q [Hq, D], k/v [L, Hkv, D] (unquantized, float32) -> per query head, the most fp8 storage of k/v can
    move its attention output (see the module docstring)."""
    group = q.shape[0] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # [L, Hq, D]
    score_shift = scale * (q.abs()[None] * (REL * k.abs() + SUB)).sum(-1).amax(0)  # [Hq]
    v_max = v.abs().amax(dim=(0, 2))
    dv_max = (REL * v.abs() + SUB).amax(dim=(0, 2))
    return dv_max + 2 * torch.expm1(2 * score_shift) * v_max


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("hq,hkv", [(8, 2), (4, 4)])
@pytest.mark.parametrize("num_splits,block_n,fused", [(1, 32, False), (4, 16, False), (4, 16, True)])
def test_decode_attention_fp8_cache(num_splits, block_n, fused, hq, hkv, dtype, device, paged_kv, poison):
    lens, head_dim = [15, 16, 33, 1, 0], 64
    k_hi, v_hi, block_tables = paged_kv(lens, hkv, head_dim, dtype, device)
    k8, v8 = _to_fp8(k_hi, v_hi)
    context_lens = torch.tensor(lens, dtype=torch.int32, device=device)
    q = torch.randn(len(lens), hq, head_dim, device=device).to(dtype)
    scale = head_dim**-0.5
    out = poison(q.shape, dtype, device)
    got = da.paged_decode_attention_triton(q, k8, v8, block_tables, context_lens, scale, out=out,
                                           num_splits=num_splits, block_n=block_n, fused_reduce=fused)
    want = da.paged_decode_attention_ref(q, k8, v8, block_tables, context_lens, scale)
    torch.testing.assert_close(got, want, **TOL[dtype])
    assert torch.equal(got[-1], torch.zeros_like(got[-1]))  # context 0
    exact = da.paged_decode_attention_ref(q, k_hi, v_hi, block_tables, context_lens, scale)
    for row, length in enumerate(lens[:-1]):
        bound = _fp8_error_bound(q[row].float(), _rows(k_hi, block_tables, row, length),
                                 _rows(v_hi, block_tables, row, length), scale)
        err = (got[row].float() - exact[row].float()).abs().amax(-1)
        rounding = TOL[dtype]["atol"] + TOL[dtype]["rtol"] * exact[row].float().abs().amax(-1)
        assert (err <= bound + rounding).all(), (row, err, bound)


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("hq,hkv", [(8, 2), (2, 2)])
def test_prefill_attention_fp8_cache(hq, hkv, dtype, device, paged_kv, poison):
    seqs, head_dim = [(15, 15), (17, 33), (1, 17), (5, 21)], 64  # (query tokens, KV length): prefixes too
    q_lens, kv_lens = [n for n, _ in seqs], [n for _, n in seqs]
    k_hi, v_hi, block_tables = paged_kv(kv_lens, hkv, head_dim, dtype, device)
    k8, v8 = _to_fp8(k_hi, v_hi)
    cu = torch.tensor([0] + q_lens).cumsum(0).to(torch.int32).to(device)
    context_lens = torch.tensor(kv_lens, dtype=torch.int32, device=device)
    q = torch.randn(sum(q_lens), hq, head_dim, device=device).to(dtype)
    scale = head_dim**-0.5
    out = poison(q.shape, dtype, device)
    got = pa.paged_prefill_attention_triton(q, k8, v8, block_tables, cu, context_lens, scale, out=out)
    want = pa.paged_prefill_attention_ref(q, k8, v8, block_tables, cu, context_lens, scale)
    torch.testing.assert_close(got, want, **TOL[dtype])
    exact = pa.paged_prefill_attention_ref(q, k_hi, v_hi, block_tables, cu, context_lens, scale)
    starts = cu.tolist()
    for s, (q_len, kv_len) in enumerate(seqs):
        k, v = _rows(k_hi, block_tables, s, kv_len), _rows(v_hi, block_tables, s, kv_len)
        for i in range(q_len):  # query i sees the first kv_len - q_len + i + 1 keys
            t, seen = starts[s] + i, kv_len - q_len + i + 1
            bound = _fp8_error_bound(q[t].float(), k[:seen], v[:seen], scale)
            err = (got[t].float() - exact[t].float()).abs().amax(-1)
            rounding = TOL[dtype]["atol"] + TOL[dtype]["rtol"] * exact[t].float().abs().amax(-1)
            assert (err <= bound + rounding).all(), (s, i, err, bound)


def test_references_decode_fp8_like_torch():
    every = torch.arange(256, dtype=torch.uint8).view(FP8_KV_DTYPE)  # 0x7F and 0xFF are NaN
    assert torch.equal(to_float(every).nan_to_num(-1.0), every.float().nan_to_num(-1.0))
    assert to_float(every).isnan().sum() == 2
    assert to_float(every[:0]).shape == (0,) and torch.equal(to_float(every[:1]), every[:1].float())
    x = to_cache_dtype(torch.randn(3, 16, 2, 8) * 40, FP8_KV_DTYPE)[:, 3:9]  # a strided view, as gathered
    assert torch.equal(to_float(x), x.float())


def test_fp8_storage_error_is_within_half_a_step():
    x = torch.randn(100_000) * 30
    stored = to_cache_dtype(x, FP8_KV_DTYPE).float()
    normal = x.abs() >= 2.0**-6
    assert ((stored - x).abs()[normal] <= REL * x.abs()[normal]).all()
    assert ((stored - x).abs()[~normal] <= SUB).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_and_cache_writes_fp8(dtype, device, poison):
    hq, hkv, d, block_size, num_blocks, num_tokens = 8, 2, 64, 16, 4, 19
    qkv = torch.randn(num_tokens, (hq + 2 * hkv) * d, device=device)
    qkv[:, hq * d :] *= torch.logspace(-4, 1, num_tokens, device=device)[:, None]  # subnormals to tens
    q, k, v = (t.view(num_tokens, -1, d) for t in qkv.to(dtype).split([hq * d, hkv * d, hkv * d], dim=-1))
    cos_sin = rope.build_cos_sin_cache(d, 512, 10000.0).to(device)
    positions = torch.randint(0, 512, (num_tokens,), device=device)
    slots = torch.randperm(num_blocks * block_size)[:num_tokens]
    slots[[0, 7]] = -1
    slots = slots.to(device)
    k_cache, v_cache = (poison((num_blocks, block_size, hkv, d), FP8_KV_DTYPE, device) for _ in range(2))
    got_q, got_k = rope.rope_and_cache_triton(q, k, v, positions, cos_sin, k_cache, v_cache, slots)
    ref_k, ref_v = (poison(k_cache.shape, FP8_KV_DTYPE, device) for _ in range(2))
    want_q, want_k = rope.rope_and_cache_ref(q, k, v, positions, cos_sin, ref_k, ref_v, slots)

    valid = slots >= 0
    flat = lambda c: c.view(-1, hkv, d)[slots[valid]].view(torch.uint8)  # noqa: E731
    # Bit for bit what torch stores for the k_rot the kernel returned and for v (saturated, nearest even).
    assert torch.equal(flat(k_cache), to_cache_dtype(got_k[valid], FP8_KV_DTYPE).view(torch.uint8))
    assert torch.equal(flat(v_cache), to_cache_dtype(v[valid], FP8_KV_DTYPE).view(torch.uint8))
    assert torch.equal(flat(v_cache), flat(ref_v))
    if dtype == torch.float32:  # bfloat16 k_rot may differ in its last bit (see test_rope_kernel.py)
        assert torch.equal(flat(k_cache), flat(ref_k))
    untouched = torch.ones(num_blocks * block_size, dtype=torch.bool)
    untouched[slots[valid].cpu()] = False
    assert k_cache.view(-1, hkv, d)[untouched.to(device)].float().isnan().all()


def test_rope_and_cache_fp8_saturates(device):
    hkv, d, num_tokens = 2, 64, 4
    q = torch.randn(num_tokens, 2, d, device=device)
    k = torch.randn(num_tokens, hkv, d, device=device) * 2000
    v = torch.randn(num_tokens, hkv, d, device=device) * 2000
    v[0, 0, :4] = torch.tensor([math.inf, -math.inf, 449.0, -1e30])
    cos_sin = rope.build_cos_sin_cache(d, 64, 10000.0).to(device)
    positions = torch.arange(num_tokens, device=device)
    slots = torch.arange(num_tokens, device=device)
    for write in (rope.rope_and_cache_triton, rope.rope_and_cache_ref):
        k_cache, v_cache = (torch.zeros(1, 16, hkv, d, dtype=FP8_KV_DTYPE, device=device) for _ in range(2))
        _, k_rot = write(q, k, v, positions, cos_sin, k_cache, v_cache, slots)
        for cache, x in ((k_cache, k_rot), (v_cache, v)):
            stored = cache.view(-1, hkv, d)[:num_tokens].float()
            assert stored.isfinite().all()
            big = x.abs() >= FP8_MAX
            assert big.sum() > 10
            assert torch.equal(stored[big], FP8_MAX * x[big].sign())
        assert v_cache[0, 0, 0, :4].float().tolist() == [448.0, -448.0, 448.0, -448.0]


def test_rope_and_cache_rejects_other_cache_dtypes(device):
    q = torch.randn(1, 2, 64, device=device)
    k = v = torch.randn(1, 2, 64, device=device)
    cos_sin = rope.build_cos_sin_cache(64, 16, 10000.0).to(device)
    cache = torch.zeros(1, 16, 2, 64, dtype=torch.float16, device=device)
    with pytest.raises(ValueError, match="caches must be"):
        rope.rope_and_cache_triton(q, k, v, torch.zeros(1, dtype=torch.int64, device=device), cos_sin, cache,
                                   cache, torch.zeros(1, dtype=torch.int64, device=device))
