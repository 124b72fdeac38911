"""EmbeddingEngine: an Embedder as the server holds a model (pool, keep_alive, stats, /api/show).

Concurrent requests are coalesced: while one forward pass runs, the requests that arrive queue up,
and the next pass embeds all of them together (length-sorted batches across requests), so many
small requests cost about what one large one does.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from velollm.embed.embedder import MAX_BATCH_SEQS, Embedder
from velollm.engine.engine_stats import EngineSettings, EngineStats

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    ids: list[list[int]]
    raw: bool
    future: asyncio.Future = field(repr=False)


class EmbeddingEngine:
    """Attributes the serving layer reads of an engine (source, max_model_len, tokenizer, stats),
    plus `tokenize` and `embed_ids`, both awaitable."""

    is_embedding = True

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.source = embedder.source
        self.device = embedder.device
        self.max_model_len = embedder.max_tokens
        self.dim = embedder.dim
        self.model_config = None
        self.tokenizer = SimpleNamespace(chat_template=None)  # no template: no completion capability
        self._pending: list[_Pending] = []
        self._worker: asyncio.Task | None = None
        self.num_prompt_tokens = 0
        self.num_requests_running = 0

    @classmethod
    def load(cls, spec: str, device: str = "cpu", dtype: Any = None) -> EmbeddingEngine:
        from velollm.embed.resolve import load_embedder

        return cls(load_embedder(spec, device=device, dtype=dtype))

    def start(self) -> None:
        """Nothing to start: forward passes run in worker threads on demand."""

    def shutdown(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self.embedder = None  # type: ignore[assignment]  # the weights go with the last reference

    def stats(self) -> EngineStats:
        return EngineStats(num_running=self.num_requests_running, num_waiting=len(self._pending),
                           num_total_blocks=0, num_free_blocks=0, num_allocated_blocks=0, kv_cache_usage=0.0,
                           prefix_cache_queries=0, prefix_cache_hits=0, num_aborted=0,
                           num_prompt_tokens=self.num_prompt_tokens, num_generation_tokens=0, num_preemptions=0,
                           num_steps=0)

    def settings(self) -> EngineSettings:
        """What /metrics reports of every engine: no KV cache, batches of up to MAX_BATCH_SEQS texts."""
        dtype = str(self.embedder.dtype).removeprefix("torch.") if self.embedder is not None else ""
        return EngineSettings(str(self.device), dtype, MAX_BATCH_SEQS, self.max_model_len, 0, False)

    async def tokenize(self, texts: list[str], truncate: bool = True, keep_last: int | None = None,
                       add_special_tokens: bool = True) -> list[list[int]]:
        return await asyncio.to_thread(self.embedder.tokenize, texts, truncate, keep_last, add_special_tokens)

    async def embed_ids(self, ids: list[list[int]], raw: bool = False) -> np.ndarray:
        """float32 [len(ids), dim] (raw: before the model's normalisation); raises what
        Embedder.embed_ids raises for bad input."""
        if not ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.embedder.check_ids(ids)  # a bad request fails alone, not the batch it would join
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(ids, raw, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        self.num_requests_running += 1
        try:
            return await future
        finally:
            self.num_requests_running -= 1

    async def _drain(self) -> None:
        while self._pending:
            taken, self._pending = self._take(self._pending)
            taken = [p for p in taken if not p.future.done()]  # cancelled: the client went away
            if not taken:
                continue
            merged = [seq for p in taken for seq in p.ids]
            try:
                vectors = await asyncio.to_thread(self.embedder.embed_ids, merged, True)
            except Exception as exc:  # noqa: BLE001 (e.g. out of memory: every request of the pass gets it)
                for p in taken:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            self.num_prompt_tokens += sum(len(s) for s in merged)
            start = 0
            for p in taken:
                if not p.future.done():
                    part = vectors[start:start + len(p.ids)]
                    p.future.set_result(part if p.raw else self.embedder.pooling.finish(part))
                start += len(p.ids)

    @staticmethod
    def _take(pending: list[_Pending]) -> tuple[list[_Pending], list[_Pending]]:
        """Whole requests, oldest first, up to MAX_BATCH_SEQS * 4 sequences (at least one request)."""
        taken, count = [], 0
        for i, p in enumerate(pending):
            if taken and count + len(p.ids) > MAX_BATCH_SEQS * 4:
                return taken, pending[i:]
            taken.append(p)
            count += len(p.ids)
        return taken, []
