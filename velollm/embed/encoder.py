"""EncoderModel: a BERT-family encoder over packed sequences (no padding in the projections and MLP).

Tokens of a batch travel as one [num_tokens, hidden] tensor; only attention regroups them into a
[num_seqs, max_len] layout (batches are length-sorted, so that padding is small) and back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from velollm.embed.config import EncoderConfig
from velollm.errors import ModelLoadError
from velollm.kernels.rope import apply_rope_ref, build_cos_sin_cache


@dataclass(frozen=True)
class PackedBatch:
    """Sequences laid end to end: token i of sequence s sits at cu_seqlens[s] + i."""

    input_ids: torch.Tensor  # int64 [num_tokens]
    positions: torch.Tensor  # int64 [num_tokens], from 0 in each sequence
    seq_lens: list[int]
    scatter_index: torch.Tensor  # int64 [num_tokens]: flat slot in the [num_seqs * max_len] layout
    key_mask: torch.Tensor | None  # bool [num_seqs, 1, 1, max_len]; None when all lengths are equal

    @classmethod
    def build(cls, ids: list[list[int]], device: torch.device | str) -> PackedBatch:
        lens = [len(x) for x in ids]
        max_len = max(lens)
        flat = [t for seq in ids for t in seq]
        positions = [p for n in lens for p in range(n)]
        scatter = [s * max_len + p for s, n in enumerate(lens) for p in range(n)]
        mask = None
        if min(lens) != max_len:
            mask = torch.arange(max_len)[None, :] < torch.tensor(lens)[:, None]
            mask = mask[:, None, None, :].to(device)
        as_long = {"dtype": torch.long, "device": device}
        return cls(torch.tensor(flat, **as_long), torch.tensor(positions, **as_long), lens,
                   torch.tensor(scatter, **as_long), mask)

    @property
    def cu_seqlens(self) -> list[int]:
        out = [0]
        for n in self.seq_lens:
            out.append(out[-1] + n)
        return out


class EncoderLayer(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        h, inter = config.hidden_size, config.intermediate_size
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.activation = config.activation
        self.qkv = nn.Linear(h, 3 * h, bias=config.qkv_bias)
        self.out = nn.Linear(h, h, bias=config.qkv_bias)
        self.attn_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.up = nn.Linear(h, 2 * inter if config.activation == "swiglu" else inter, bias=config.mlp_fc1_bias)
        self.down = nn.Linear(inter, h, bias=config.mlp_fc2_bias)
        self.mlp_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, batch: PackedBatch, rotary: torch.Tensor | None) -> torch.Tensor:
        x = self.attn_norm(x + self.out(self.attention(x, batch, rotary)))
        return self.mlp_norm(x + self.down(self.mlp(self.up(x))))

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation == "swiglu":
            up, gate = x.chunk(2, dim=-1)
            return up * F.silu(gate)
        return F.gelu(x, approximate="tanh" if self.activation == "gelu_tanh" else "none")

    def attention(self, x: torch.Tensor, batch: PackedBatch, rotary: torch.Tensor | None) -> torch.Tensor:
        num_tokens = x.shape[0]
        q, k, v = self.qkv(x).view(num_tokens, 3, self.num_heads, self.head_dim).unbind(1)
        if rotary is not None:
            cos, sin = rotary[batch.positions].chunk(2, dim=-1)
            q, k = apply_rope_ref(q, cos, sin), apply_rope_ref(k, cos, sin)
        num_seqs, max_len = len(batch.seq_lens), max(batch.seq_lens)
        if num_seqs == 1 or batch.key_mask is None:
            grouped = [t.view(num_seqs, max_len, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v)]
            out = F.scaled_dot_product_attention(*grouped)
            return out.transpose(1, 2).reshape(num_tokens, -1)
        grouped = []
        for t in (q, k, v):
            padded = t.new_zeros(num_seqs * max_len, self.num_heads, self.head_dim)
            padded[batch.scatter_index] = t
            grouped.append(padded.view(num_seqs, max_len, self.num_heads, self.head_dim).transpose(1, 2))
        out = F.scaled_dot_product_attention(*grouped, attn_mask=batch.key_mask)
        out = out.transpose(1, 2).reshape(num_seqs * max_len, -1)
        return out[batch.scatter_index]


class EncoderModel(nn.Module):
    """Embeddings + post-LN layers; forward returns the last hidden state of every packed token."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.config = config
        self.word = nn.Embedding(config.vocab_size, h)
        self.position = None if config.rotary else nn.Embedding(config.max_position_embeddings, h)
        self.token_type = nn.Embedding(max(1, config.type_vocab_size), h)
        self.embed_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))
        if config.rotary:
            cache = build_cos_sin_cache(config.head_dim, config.max_position_embeddings, config.rotary_base)
            self.register_buffer("rotary", cache, persistent=False)
        else:
            self.rotary = None

    @classmethod
    def empty(cls, config: EncoderConfig, device: str, dtype: torch.dtype) -> EncoderModel:
        """Uninitialised parameters on `device` (built on the meta device: no random init to wait for)."""
        with torch.device("meta"):
            model = cls(config)
        model = model.to_empty(device=device).to(dtype)
        if config.rotary:  # a non-persistent float32 buffer: rebuilt, never loaded
            model.rotary = build_cos_sin_cache(config.head_dim, config.max_position_embeddings,
                                               config.rotary_base).to(device)
        return model

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        x = self.word(batch.input_ids) + self.token_type.weight[0]
        if self.position is not None:
            x = x + self.position(batch.positions + self.config.position_offset)
        x = self.embed_norm(x)
        for layer in self.layers:
            x = layer(x, batch, self.rotary)  # float32 cos/sin: apply_rope_ref rotates in float32
        return x

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, int | None, torch.Tensor]]) -> None:
        """Copy (our name, shard, tensor) triples in; shard i of n fills the i-th n-th of a fused tensor."""
        params = dict(self.named_parameters())
        missing = set(params)
        for name, shard, tensor in weights:
            param = params.get(name)
            if param is None:
                raise ModelLoadError(f"checkpoint tensor for {name!r} has no place in the {self.config.model_type} encoder")
            target = param if shard is None else param.chunk(_shards(name), dim=0)[shard]
            if tuple(target.shape) != tuple(tensor.shape):
                raise ModelLoadError(f"tensor {name!r} (shard {shard}) has shape {tuple(tensor.shape)}, "
                                     f"expected {tuple(target.shape)}")
            target.copy_(tensor)
            missing.discard(name)
        if missing:
            raise ModelLoadError(f"checkpoint lacks tensors for {sorted(missing)[:5]}")


def _shards(name: str) -> int:
    return 3 if ".qkv." in name else 2
