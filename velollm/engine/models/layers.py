"""Building blocks shared by the model architectures; each calls one op from velollm.kernels."""

from __future__ import annotations

import torch
from torch import nn

from velollm import kernels
from velollm.config import RopeScaling
from velollm.engine.dense_attention import DenseAttentionMetadata, dense_attention
from velollm.engine.forward_context import get_attention_metadata, get_kernel_switches


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        if residual is None:
            return kernels.rms_norm(x, self.weight, self.eps)
        return kernels.fused_add_rms_norm(x, residual, self.weight, self.eps)


class SiluAndMul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.silu_and_mul(x)


class RotaryEmbedding(nn.Module):
    """Holds the cos/sin table; the rotation itself is fused with the KV-cache write."""

    def __init__(self, head_dim: int, max_position: int, theta: float, scaling: RopeScaling | None) -> None:
        super().__init__()
        cache = kernels.build_cos_sin_cache(head_dim, max_position, theta, scaling)
        self.register_buffer("cos_sin_cache", cache, persistent=False)


class PagedAttention(nn.Module):
    """Writes this step's K/V into the paged cache, then attends over the cache."""

    def __init__(self, layer_idx: int, num_heads: int, num_kv_heads: int, head_dim: int, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5
        self.rotary = rotary

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        meta = get_attention_metadata()
        num_tokens = q.shape[0]
        q = q.view(num_tokens, self.num_heads, self.head_dim)
        k = k.view(num_tokens, self.num_kv_heads, self.head_dim)
        v = v.view(num_tokens, self.num_kv_heads, self.head_dim)
        if isinstance(meta, DenseAttentionMetadata):  # no KV cache (embedding passes)
            out = dense_attention(q, k, v, positions, self.rotary.cos_sin_cache, meta, self.scale)
            return out.reshape(num_tokens, self.num_heads * self.head_dim)
        k_cache, v_cache = meta.kv_caches[self.layer_idx]
        q, k = kernels.rope_and_cache(q, k, v, positions, self.rotary.cos_sin_cache, k_cache, v_cache, meta.slot_mapping)
        switches = get_kernel_switches()
        if meta.decode_only:
            out = kernels.paged_decode_attention(q, k_cache, v_cache, meta.block_tables, meta.context_lens, self.scale,
                                                 fused_reduce=switches.decode_fused_reduce)
        elif meta.no_cached_prefix and kernels.prefill_attention_path(q, switches.prefill_attention) == "varlen":
            k, v = kernels.as_stored(k, k_cache.dtype), kernels.as_stored(v, v_cache.dtype)  # as later steps read them
            out = kernels.varlen_prefill_attention(q, k, v, meta.cu_seqlens_q, meta.max_query_len, self.scale)
        else:
            out = kernels.paged_prefill_attention(
                q, k_cache, v_cache, meta.block_tables, meta.cu_seqlens_q, meta.context_lens, self.scale,
                max_query_len=meta.max_query_len,
            )
        return out.reshape(num_tokens, self.num_heads * self.head_dim)
