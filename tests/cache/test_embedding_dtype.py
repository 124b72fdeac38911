"""The semantic tier's embedder dtype follows the engine's rule: bfloat16 only where the CPU has bf16 dot products."""

from __future__ import annotations

import pytest
import torch

from velollm.cache import response_cache
from velollm.hw import cpu_features

SKYLAKE_SP = frozenset({"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"})  # AVX-512, bf16 emulated
ZEN4 = SKYLAKE_SP | {"avx512_bf16"}
SAPPHIRE_RAPIDS = SKYLAKE_SP | {"amx_bf16", "amx_tile"}


@pytest.mark.parametrize("flags, want", [(SKYLAKE_SP, None), (ZEN4, torch.bfloat16), (SAPPHIRE_RAPIDS, torch.bfloat16),
                                         (frozenset({"avx2", "fma"}), None)])
def test_bfloat16_only_with_bf16_dot_products(monkeypatch, flags, want):
    """oneDNN's own check says yes on every AVX-512 CPU (the CI runners' Skylake-SP among them): taken, it ran the
    cache's embeddings there in emulated bfloat16, slower than float32 and unlike this AVX2 machine's float32."""
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda: flags)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: "avx512bw" in flags)
    assert response_cache._embedding_dtype("cpu") == want
    assert response_cache._embedding_dtype("cuda") is None  # the Embedder's float16
