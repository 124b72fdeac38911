"""Decoder embedding models (Qwen3-Embedding and other Llama-family decoders with last-token pooling)
on the engine's own model code, run with dense attention and no KV cache.

Their checkpoints are usually saved as the bare `Qwen3Model` (tensor names without "model.", no
lm_head): names are prefixed here and the model is built with tied embeddings, so that no output head
is needed or allocated. The instruction prefix of a query is the client's to add, as with
sentence-transformers' `prompt`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from velollm.config import SUPPORTED_ARCHITECTURES, ModelConfig
from velollm.embed.encoder import PackedBatch
from velollm.engine.dense_attention import DenseAttentionMetadata
from velollm.engine.device import device_scope
from velollm.engine.forward_context import forward_context
from velollm.engine.loader.source import TORCH_DTYPES, ModelInfo, ModelSource


class DecoderEncoder(nn.Module):
    """A causal LM's final hidden states for packed sequences (the pooling picks the last token)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        # device_scope: the Triton norms and activations launch on the current device, not the ids' (cuda:N)
        with device_scope(batch.input_ids.device), forward_context(DenseAttentionMetadata(batch.seq_lens)):
            return self.model(batch.input_ids, batch.positions)


def decoder_config(raw: dict[str, Any]) -> ModelConfig:
    """ModelConfig of a decoder embedding checkpoint (`Qwen3Model` is read as `Qwen3ForCausalLM`)."""
    archs = [a.removesuffix("Model") + "ForCausalLM" if a.endswith("Model") else a for a in raw.get("architectures") or []]
    if not archs:
        archs = [a for a, t in SUPPORTED_ARCHITECTURES.items() if t == raw.get("model_type")][:1]
    return ModelConfig.from_hf_config({**raw, "architectures": archs}).replace(tie_word_embeddings=True)


def decoder_builder(info: ModelInfo, config: ModelConfig, iter_weights: Callable[[], Iterator[tuple[str, Any]]],
                    quantization: str = "none") -> Callable[[str, torch.dtype], nn.Module]:
    """build(device, dtype) for EmbeddingSource: the engine model, weights streamed from `iter_weights`
    (GGUF planes too, with quantization="gguf", as the engine keeps them)."""

    def build(device: str, dtype: torch.dtype) -> nn.Module:
        from velollm.engine.model_runner import load_model

        name = {v: k for k, v in TORCH_DTYPES.items()}[dtype]
        source = ModelSource(config.replace(dtype=name), info, _no_tokenizer, lambda: _model_names(iter_weights()),
                             Path(info.path), quantization=quantization)
        return DecoderEncoder(load_model(source, source.config, device, dtype))

    return build


def _no_tokenizer() -> Any:
    raise RuntimeError("the embedder holds the tokenizer; load_model never asks for it")


def _model_names(weights: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    for name, tensor in weights:
        if name.startswith("lm_head."):
            continue  # tied to the embedding: embedding passes never use the head
        yield (name if name.startswith("model.") else "model." + name), tensor
