"""SemanticTier: on an exact miss, the question is embedded and compared with the questions cached
under the same context; the nearest ones over the threshold go through the Verifier."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from velollm.cache.entry import CacheEntry
from velollm.cache.query_text import QueryText
from velollm.cache.sqlite_store import SQLiteStore
from velollm.cache.vector_index import VectorIndex
from velollm.cache.verifier import Verifier
from velollm.hw.torch_threads import one_intra_op_thread

logger = logging.getLogger(__name__)

NUM_CANDIDATES = 4
T = TypeVar("T")


@dataclass
class SemanticMatch:
    entry: CacheEntry | None
    score: float  # cosine of the best candidate (0.0 when the context has none)
    vector: np.ndarray  # the question's embedding, kept to store the answer under
    rejected: list[str]  # the verifier's reasons for the candidates it turned down


class SemanticTier:
    """`embedder`: velollm.embed.Embedder (embed(texts) -> float32 [n, dim], unit rows; dim; max_tokens)."""

    def __init__(self, store: SQLiteStore, embedder: Any, threshold: float, verifier: Verifier | None = None) -> None:
        self.store = store
        self.embedder = embedder
        self.threshold = threshold
        self.verifier = verifier or Verifier()
        self.index = VectorIndex(int(embedder.dim))
        # Longer questions would be cut at the embedder's window, and two that differ past it would match.
        self.max_words = max(8, int(getattr(embedder, "max_tokens", 256)) // 2)
        # One intra-op thread: embedding one short question gains nothing from more, and a second OpenMP team
        # beside the engine's oversubscribes the CPU (on the 2-core test box: 772 ms vs 22 ms p50 per question
        # under load); the engine's threads, started before or after, keep the process's count.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="velollm-embed", initializer=one_intra_op_thread())
        self.rebuild()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs blocking work (embedding) on the tier's own worker thread, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.index.save_graphs(self.store.path.parent)

    def rebuild(self) -> int:
        def rows():
            for key, context, _query, blob in self.store.iter_semantic():
                vector = np.frombuffer(blob, dtype=np.float32)
                if vector.shape == (self.index.dim,):
                    yield context, key, vector

        n = self.index.load(rows(), saved=self.store.path.parent)
        if n:
            logger.info("semantic cache: %d entries indexed", n)
        return n

    def accepts(self, query: str | None) -> bool:
        return query is not None and len(query.split()) <= self.max_words

    def embed(self, text: str) -> np.ndarray:
        return np.asarray(self.embedder.embed([text])[0], dtype=np.float32)

    def same_question(self, query: str, vector: np.ndarray, other: str, other_vector: np.ndarray) -> bool:
        """Whether a lookup of `query` would take an entry for `other` (same context): the hit rule."""
        return float(np.dot(vector, other_vector)) >= self.threshold and self.verifier.check(query, other).same

    def lookup_sync(self, context: str, query: str, vector: np.ndarray | None = None) -> SemanticMatch:
        """Blocking (embeds, unless `vector` is the query's embedding already): run it on a worker thread."""
        vector = self.embed(query) if vector is None else vector
        candidates = self.index.search(context, vector, NUM_CANDIDATES)
        rejected: list[str] = []
        best = candidates[0][0] if candidates else 0.0
        text = QueryText(query)  # parsed once for every candidate
        for score, key in candidates:
            if score < self.threshold:
                break
            entry = self.store.get_sync(key)
            if entry is None or entry.query is None:
                self.index.remove(context, key)
                continue
            verdict = self.verifier.check(text, entry.query)
            if verdict.same:
                return SemanticMatch(entry, score, vector, rejected)
            rejected.append(verdict.reason)
        return SemanticMatch(None, best, vector, rejected)

    def add(self, entry: CacheEntry, vector: np.ndarray) -> None:
        self.index.add(entry.context, entry.key, vector)

    def forget(self, evicted: list[tuple[str, str]]) -> None:
        for key, context in evicted:
            self.index.remove(context, key)
