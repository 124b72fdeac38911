"""Checkpoint tensor names (Hugging Face BERT / XLM-R / NomicBert, GGUF bert / nomic-bert) -> EncoderModel's.

Each mapper returns (our parameter name, shard index or None), or None for a tensor the encoder does
not use (a pooler, an MLM head); q/k/v and up/gate arrive as shards of one fused parameter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import torch

Target = tuple[str, int | None]

_HF_PREFIXES = ("bert.", "roberta.", "model.", "encoder_model.")
_HF_SKIPPED = re.compile(r"^(pooler|cls|lm_head|classifier|embeddings\.position_ids)")
_HF_GLOBAL = {
    "embeddings.word_embeddings": "word", "embeddings.position_embeddings": "position",
    "embeddings.token_type_embeddings": "token_type", "embeddings.LayerNorm": "embed_norm",
    "emb_ln": "embed_norm",
}
_HF_LAYER = re.compile(r"encoder\.layers?\.(\d+)\.(.+)")
_HF_BLOCK: dict[str, Target] = {
    "attention.self.query": ("qkv", 0), "attention.self.key": ("qkv", 1), "attention.self.value": ("qkv", 2),
    "attention.output.dense": ("out", None), "attention.output.LayerNorm": ("attn_norm", None),
    "intermediate.dense": ("up", None), "output.dense": ("down", None), "output.LayerNorm": ("mlp_norm", None),
    # NomicBertModel
    "attn.Wqkv": ("qkv", None), "attn.out_proj": ("out", None), "norm1": ("attn_norm", None),
    "mlp.fc11": ("up", 0), "mlp.fc12": ("up", 1), "mlp.fc2": ("down", None), "norm2": ("mlp_norm", None),
}
_LEGACY_SUFFIX = {"gamma": "weight", "beta": "bias"}

_GGUF_GLOBAL = {"token_embd": "word", "position_embd": "position", "token_types": "token_type",
                "token_embd_norm": "embed_norm"}
_GGUF_BLOCK: dict[str, Target] = {
    "attn_q": ("qkv", 0), "attn_k": ("qkv", 1), "attn_v": ("qkv", 2), "attn_qkv": ("qkv", None),
    "attn_output": ("out", None), "attn_output_norm": ("attn_norm", None),
    "ffn_up": ("up", 0), "ffn_gate": ("up", 1), "ffn_down": ("down", None),
    "layer_output_norm": ("mlp_norm", None),
}
_GGUF_LAYER = re.compile(r"blk\.(\d+)\.(\w+)")


def hf_target(name: str) -> Target | None:
    for prefix in _HF_PREFIXES:
        name = name.removeprefix(prefix)
    if _HF_SKIPPED.match(name):
        return None
    module, _, suffix = name.rpartition(".")
    suffix = _LEGACY_SUFFIX.get(suffix, suffix)
    if module in _HF_GLOBAL:
        return f"{_HF_GLOBAL[module]}.{suffix}", None
    m = _HF_LAYER.fullmatch(module)
    if m and m.group(2) in _HF_BLOCK:
        ours, shard = _HF_BLOCK[m.group(2)]
        return f"layers.{m.group(1)}.{ours}.{suffix}", shard
    raise KeyError(name)


def gguf_target(name: str, gelu_mlp: bool) -> Target | None:
    """GGUF names; `gelu_mlp`: ffn_up is the whole fc1 (bert), not the up half of a SwiGLU."""
    module, _, suffix = name.rpartition(".")
    if module in _GGUF_GLOBAL:
        return f"{_GGUF_GLOBAL[module]}.{suffix}", None
    m = _GGUF_LAYER.fullmatch(module)
    if m and m.group(2) in _GGUF_BLOCK:
        ours, shard = _GGUF_BLOCK[m.group(2)]
        if gelu_mlp and ours == "up":
            shard = None
        return f"layers.{m.group(1)}.{ours}.{suffix}", shard
    raise KeyError(name)


def map_hf(weights: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, int | None, torch.Tensor]]:
    """Stream HF tensors as (our name, shard, tensor); raises KeyError on a tensor nobody knows."""
    for name, tensor in weights:
        target = hf_target(name)
        if target is not None:
            yield target[0], target[1], tensor
