"""Attention within each packed sequence and no KV cache: forward passes whose keys are never reused
(embedding models run on the generation models' code). The model code is unchanged: its attention
layers find DenseAttentionMetadata in the forward context instead of the paged metadata."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from velollm.kernels.rope import apply_rope_ref


@dataclass(frozen=True)
class DenseAttentionMetadata:
    seq_lens: list[int]  # the packed sequences, laid end to end
    causal: bool = True


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor,
                    cos_sin_cache: torch.Tensor, meta: DenseAttentionMetadata, scale: float) -> torch.Tensor:
    """q [T, Hq, D], k / v [T, Hkv, D] -> [T, Hq, D]: neox rotary on q and k, then (causal) attention of
    each sequence over itself (grouped-query heads shared as in the paged kernels)."""
    cos, sin = cos_sin_cache[positions].chunk(2, dim=-1)
    q, k = apply_rope_ref(q, cos, sin), apply_rope_ref(k, cos, sin)
    groups = q.shape[1] // k.shape[1]
    out = []
    for qs, ks, vs in zip(q.split(meta.seq_lens), k.split(meta.seq_lens), v.split(meta.seq_lens)):
        ks, vs = ks.repeat_interleave(groups, dim=1), vs.repeat_interleave(groups, dim=1)
        o = F.scaled_dot_product_attention(qs.transpose(0, 1), ks.transpose(0, 1), vs.transpose(0, 1),
                                           is_causal=meta.causal, scale=scale)
        out.append(o.transpose(0, 1))
    return torch.cat(out)
