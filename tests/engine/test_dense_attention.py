"""Dense attention (no KV cache, for embedding passes) equals the paged prefill path on the same inputs."""

from __future__ import annotations

import torch

from velollm.engine.dense_attention import DenseAttentionMetadata, dense_attention
from velollm.kernels.prefill_attention import paged_prefill_attention_ref
from velollm.kernels.rope import build_cos_sin_cache, rope_and_cache_ref


def test_dense_attention_matches_paged_prefill():
    torch.manual_seed(0)
    lens, hq, hkv, d, block = [5, 1, 19, 16], 4, 2, 32, 16
    total = sum(lens)
    q, k, v = torch.randn(total, hq, d), torch.randn(total, hkv, d), torch.randn(total, hkv, d)
    positions = torch.cat([torch.arange(n) for n in lens])
    cache = build_cos_sin_cache(d, 64, 10000.0)
    blocks_per_seq = [-(-n // block) for n in lens]
    k_cache = torch.zeros(sum(blocks_per_seq), block, hkv, d)
    v_cache = torch.zeros_like(k_cache)
    tables, slots, first = [], [], 0
    for n, nb in zip(lens, blocks_per_seq):
        table = list(range(first, first + nb))
        tables.append(table + [0] * (max(blocks_per_seq) - nb))
        slots += [table[p // block] * block + p % block for p in range(n)]
        first += nb
    q_rot, _ = rope_and_cache_ref(q, k, v, positions, cache, k_cache, v_cache, torch.tensor(slots))
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    expected = paged_prefill_attention_ref(q_rot, k_cache, v_cache, torch.tensor(tables, dtype=torch.int32), cu,
                                           torch.tensor(lens, dtype=torch.int32), d**-0.5)
    got = dense_attention(q, k, v, positions, cache, DenseAttentionMetadata(lens), d**-0.5)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
