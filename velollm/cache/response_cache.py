"""ResponseCache: the exact tier, then (when on) the semantic tier, over the stores; what the
middleware asks. Embedding runs on a worker thread, never on the event loop. Entries of a model's former
identities are deleted from every tier in the background (velollm/cache/stale_purge.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np

from velollm.cache.calibration import threshold_for
from velollm.cache.config import ResponseCacheConfig
from velollm.cache.entry import CacheEntry, ExactStore
from velollm.cache.key import CacheKey, entry_prefixes
from velollm.cache.metrics import CacheMetrics
from velollm.cache.semantic_tier import SemanticTier
from velollm.cache.sqlite_store import SQLiteStore
from velollm.cache.stale_purge import StalePurge

logger = logging.getLogger(__name__)


@dataclass
class Lookup:
    kind: str  # "exact", "semantic" or "miss"
    entry: CacheEntry | None = None
    score: float = 0.0
    vector: np.ndarray | None = None  # the question's embedding (semantic tier), reused to store the answer


class ResponseCache:
    def __init__(self, config: ResponseCacheConfig, sqlite: SQLiteStore, exact: ExactStore,
                 semantic: SemanticTier | None, registry: Any = None) -> None:
        self.config = config
        self.sqlite = sqlite
        self.exact = exact
        self.semantic = semantic
        sqlite.keeps_evicted = semantic is not None  # only the semantic tier forgets them
        self.metrics: CacheMetrics | None = None
        self._pending: set[asyncio.Task] = set()
        self._shared_count = 0  # entries in a shared exact store (Redis), refreshed at most once a second
        self._counted_at = 0.0
        self.stale = StalePurge(self.purge)
        if registry is not None:
            self.metrics = CacheMetrics(registry, self.num_entries)

    @classmethod
    def open(cls, config: ResponseCacheConfig, registry: Any = None, embedder: Any = None) -> ResponseCache:
        """Opens (or sets aside and recreates) the SQLite file, connects Redis, loads the embedder."""
        sqlite = SQLiteStore(config.sqlite_path, config.max_entries)
        exact: ExactStore = sqlite
        if config.url is not None:
            from velollm.cache.redis_store import RedisStore

            exact = RedisStore(config.url, config.max_entries)
        semantic = None
        if config.semantic:
            if embedder is None:
                from velollm.embed import load_embedder

                device = _device(config.embedding_device)
                embedder = load_embedder(config.embedding_model, device=device, dtype=_embedding_dtype(device))
            semantic = SemanticTier(sqlite, embedder, threshold_for(config.semantic_max_error))
        return cls(config, sqlite, exact, semantic, registry)

    def _observe(self, tier: str, t0: float) -> None:
        if self.metrics is not None:
            self.metrics.lookup.labels(tier).observe(time.perf_counter() - t0)

    async def lookup(self, key: CacheKey, max_age_s: float | None = None, vector: np.ndarray | None = None,
                     count: bool = True) -> Lookup:
        """The cached answer for `key`, if any (`vector`: the question's embedding, when known). With
        `count` false the hit or miss is left for `count_lookup` (a request that looks up twice)."""
        self.stale.seen(key.model, key.identity)
        lookup = await self._lookup(key, max_age_s, vector)
        if count:
            self.count_lookup(lookup)
        return lookup

    def count_lookup(self, lookup: Lookup) -> None:
        if self.metrics is None:
            return
        if lookup.entry is None:
            self.metrics.misses.inc()
        else:
            self.metrics.hits.labels(lookup.kind).inc()

    async def _lookup(self, key: CacheKey, max_age_s: float | None, vector: np.ndarray | None) -> Lookup:
        await self._recount()
        t0 = time.perf_counter()
        entry = await self.exact.get(key.exact)
        self._observe("exact", t0)
        if entry is not None and _fresh(entry, max_age_s):
            self._later(self._touch(entry.key))
            return Lookup("exact", entry, 1.0)
        if self.semantic is None or not self.semantic.accepts(key.query):
            return Lookup("miss")
        if not self.semantic.index.has(key.context):  # nothing to compare with: embed later, when storing
            return Lookup("miss", vector=vector)
        t1 = time.perf_counter()
        match = await self.semantic.run(self.semantic.lookup_sync, key.context, key.query or "", vector)
        self._observe("semantic", t1)
        if self.metrics is not None:
            for reason in match.rejected:
                self.metrics.rejected.labels(reason).inc()
        if match.entry is not None and _fresh(match.entry, max_age_s):
            self._later(self._touch(match.entry.key))
            return Lookup("semantic", match.entry, match.score, match.vector)
        return Lookup("miss", None, match.score, match.vector)

    async def _touch(self, key: str) -> None:
        touch = getattr(self.exact, "touch", None)
        if touch is not None:
            await touch(key)

    def count_bypass(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.bypass.labels(reason).inc()

    async def store(self, key: CacheKey, answer: dict[str, Any], ttl_s: float | None = None,
                    vector: np.ndarray | None = None) -> bool:
        """Stores an answer under the key (and its question's embedding for the semantic tier); not one made
        under an identity its model no longer has (it would only wait for the purge)."""
        if self.stale.outdated(key.model, key.identity):
            return False
        now = time.time()
        entry = CacheEntry(key=key.exact, context=key.context, kind=key.kind, model=key.model, query=key.query,
                           answer=answer, created=now, expires=now + (ttl_s or self.config.ttl_s))
        semantic = self.semantic is not None and self.semantic.accepts(key.query)
        if semantic and vector is None:
            vector = await self.semantic.run(self.semantic.embed, key.query or "")  # type: ignore[union-attr]
        if semantic and vector is not None:
            entry.embedding = np.asarray(vector, dtype=np.float32).tobytes()
        ok = await self.exact.put(entry)
        if self.exact is not self.sqlite and semantic:
            ok = await self.sqlite.put(entry) and ok
        if semantic and vector is not None and self.sqlite.storing:  # a graph insertion: off the event loop
            await self.semantic.run(self.semantic.add, entry, vector)  # type: ignore[union-attr]
        if self.semantic is not None:
            self.semantic.forget(self.sqlite.take_evicted())
        if not ok and self.metrics is not None:
            self.metrics.store_failures.inc()
        await self._recount()
        return ok

    async def _recount(self) -> None:
        if self.exact is not self.sqlite and time.monotonic() - self._counted_at > 1.0:
            self._counted_at = time.monotonic()
            self._shared_count = await self.exact.count()

    def num_entries(self) -> int:
        """Entries of the exact tier (the velollm_cache_entries gauge)."""
        return self.sqlite.count_sync() if self.exact is self.sqlite else self._shared_count

    def store_later(self, key: CacheKey, answer: dict[str, Any], ttl_s: float | None = None,
                    vector: np.ndarray | None = None) -> asyncio.Task:
        """Stores in the background (the response is not held up); close() waits for these."""
        return self._later(self.store(key, answer, ttl_s, vector))

    def _later(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = asyncio.create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def drain(self) -> None:
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def count(self) -> int:
        return await self.exact.count()

    async def purge(self, model: str, identity: str | None, deadline: float) -> int:
        """Deletes `model`'s entries of any identity but `identity` (None: all of them) from every tier, until the
        monotonic `deadline`; how many (the exact tier's)."""
        prefix, keep = entry_prefixes(model, identity or "")
        if identity is None:
            keep = prefix + "~"  # no key begins so (tags are hex)
        removed = await self.exact.purge(prefix, keep, deadline)
        if self.exact is not self.sqlite:  # the semantic tier's copies
            await self.sqlite.purge(prefix, keep, deadline)
        if self.semantic is not None:  # possibly many vectors: off the event loop (the index has its own lock)
            await asyncio.to_thread(self.semantic.forget, self.sqlite.take_evicted())
        if removed and self.metrics is not None:
            self.metrics.purged.inc(removed)
        return removed

    async def clear(self) -> int:
        removed = await self.exact.clear()
        if self.exact is not self.sqlite:
            removed += await self.sqlite.clear()
        if self.semantic is not None:
            self.semantic.index.clear()
        return removed

    async def close(self) -> None:
        await self.stale.close()
        await self.drain()
        if self.exact is not self.sqlite:
            await self.exact.close()
        await self.sqlite.close()
        if self.semantic is not None:
            self.semantic.close()


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _embedding_dtype(device: str) -> Any:
    """bfloat16 on a CPU with native bf16 dot products (AVX512-BF16, AMX; velollm.hw.cpu_features, the rule of
    the engine's dtype): one short question embeds about 1.3x faster than in float32 (benchmarks/cache.py
    latency), and its vector stays within cosine 0.9999 of the float32 one, far below what moves a pair across
    the threshold. Otherwise the Embedder's default (float32 on CPU, float16 on GPU). Not oneDNN's bf16 check
    (torch.ops.mkldnn._is_mkldnn_bf16_supported): it answers yes for any AVX-512 CPU (AVX512BW/VL/DQ, e.g.
    Skylake-SP), where bfloat16 is emulated and slower than float32."""
    import torch

    from velollm.hw import cpu_features

    if device == "cpu" and cpu_features.has_native_bf16():
        return torch.bfloat16
    return None


def _fresh(entry: CacheEntry, max_age_s: float | None) -> bool:
    return max_age_s is None or time.time() - entry.created <= max_age_s
