"""EmbeddingSource: everything needed to build one embedding model, whatever format it came in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from velollm.embed.pooling import Pooling
from velollm.engine.loader.source import ModelInfo

if TYPE_CHECKING:
    import tokenizers
    from torch import nn


@dataclass(frozen=True)
class EmbeddingSource:
    """A resolved embedding model: how to build the network, tokenize, pool, and how long inputs may be.

    `build(device, dtype)` returns a module whose forward maps a PackedBatch to token states
    [num_tokens, dim]; `load_tokenizer()` returns a `tokenizers.Tokenizer` that adds the model's
    special tokens and truncates to `max_tokens`.
    """

    info: ModelInfo
    kind: str  # "encoder" | "decoder"
    dim: int
    max_tokens: int
    pooling: Pooling
    build: Callable[[str, torch.dtype], nn.Module]
    load_tokenizer: Callable[[], tokenizers.Tokenizer]
