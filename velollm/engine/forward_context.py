"""Attention metadata for one forward pass, reached by the attention layers through a context variable,
and the engine's kernel switches beside it.

Model code stays Hugging Face shaped: `forward(positions, hidden_states)`; the paged-KV details live here.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from velollm.config import KernelSwitches
from velollm.engine.dense_attention import DenseAttentionMetadata


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # int64 [num_tokens]; -1 = padding
    block_tables: torch.Tensor  # int32 [num_seqs, max_blocks_per_seq]
    context_lens: torch.Tensor  # int32 [num_seqs]: KV length including this step's tokens
    cu_seqlens_q: torch.Tensor  # int32 [num_seqs + 1]
    max_query_len: int
    kv_caches: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (k_cache, v_cache)
    # Known on the host when the step is built: no sequence has KV before this step's tokens, so attention
    # needs only this step's k/v (KernelSwitches.prefill_attention picks the kernel).
    no_cached_prefix: bool = False

    @property
    def decode_only(self) -> bool:
        return self.max_query_len == 1


_current: contextvars.ContextVar[AttentionMetadata | DenseAttentionMetadata | None] = contextvars.ContextVar("attention_metadata", default=None)
_switches: contextvars.ContextVar[KernelSwitches] = contextvars.ContextVar("kernel_switches", default=KernelSwitches())


@contextlib.contextmanager
def forward_context(metadata: AttentionMetadata | DenseAttentionMetadata,
                    switches: KernelSwitches | None = None) -> Iterator[None]:
    """`switches`: the engine's (the model runner settles prefill_attention to varlen or paged); the
    defaults without."""
    token = _current.set(metadata)
    switches_token = _switches.set(switches or KernelSwitches())
    try:
        yield
    finally:
        _switches.reset(switches_token)
        _current.reset(token)


def get_attention_metadata() -> AttentionMetadata | DenseAttentionMetadata:
    metadata = _current.get()
    if metadata is None:
        raise RuntimeError("attention layers run only inside forward_context()")
    return metadata


def get_kernel_switches() -> KernelSwitches:
    return _switches.get()
