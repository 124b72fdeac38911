"""OnDemandModels: the names outside --model that VeloLLM can run (Ollama store, HF cache, a path, demo).

A name is resolved to its canonical model name (cached: names are client-chosen), described from its
source without reading weights (/api/show), loaded into a ModelPool (at most --max-loaded-models,
unloaded after keep_alive) and leased to a request until its generation stream closes. Predicted
names load ahead into free slots (velollm.context.model_prefetch).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from velollm.api.lease import EngineLease
from velollm.api.model_identity import engine_identity
from velollm.api.model_pool import ModelPool
from velollm.api.served_model import ServedModel, SourceView
from velollm.context.model_prefetch import ModelPrefetcher
from velollm.errors import ModelNotFound, PathNotAllowed, UnsupportedModel, VeloLLMError
from velollm.wire.names import name_key

logger = logging.getLogger(__name__)

NEGATIVE_TTL_S = 5.0  # a name that did not resolve is looked up again after this (a pull lands quickly)
UNSUPPORTED_TTL_S = 60.0  # a model that failed to load as unsupported is not retried natively before this


@dataclass(frozen=True)
class OnDemand:
    """How names outside --model are served. Both callables block (they run in worker threads).

    `resolve(name)` -> the canonical name to load (cheap: no weights read), or ModelNotFound /
    UnsupportedModel; `load(name)` -> a started engine.
    """

    resolve: Callable[[str], str]
    load: Callable[[str], Any]
    max_loaded_models: int = 1
    keep_alive_s: float = 300.0
    # canonical name -> its ModelSource, no weights read (/api/show of a model not loaded);
    # None: velollm.engine.loader.resolve.resolve_model
    describe: Callable[[str], Any] | None = None
    host_cache_bytes: int = 0  # weights of evicted CPU models kept asleep for a fast re-load
    prefetch: bool = True  # predicted models loaded ahead into free slots (velollm.context.model_prefetch)
    # canonical name -> whether it may load ahead (memory to spare; blocking); None: always
    prefetch_room: Callable[[str], bool] | None = None
    # canonical name -> the identity of its files (velollm/api/model_identity.py; blocking); None: unknown
    identify: Callable[[str], str] | None = None


def _bare(exc: Exception) -> Exception:
    """A copy of `exc` without its traceback, to keep: the raised one holds every frame it went through
    (the request's handlers, with their locals), tens of kB per client-chosen name in the cache."""
    return type(exc)(str(exc))


class OnDemandModels:
    """The on-demand side of the ModelRegistry. `served_otherwise(name)`: whether a request for `name`
    would not load it on demand (a pinned model, or a configured backend answering first)."""

    def __init__(self, config: OnDemand, served_otherwise: Callable[[str], bool]) -> None:
        self.config = config
        self._served_otherwise = served_otherwise
        # name -> (expiry on the monotonic clock, canonical name or the error it raised)
        self._resolved: dict[str, tuple[float, str | Exception]] = {}
        self._described: dict[str, ServedModel] = {}  # canonical name -> a SourceView, for /api/show
        self.pool = ModelPool(self._load, config.max_loaded_models, config.keep_alive_s, config.host_cache_bytes)
        self.prefetcher = ModelPrefetcher(self.pool, self._prefetchable, enabled=config.prefetch)
        self.pool.on_slot_freed = self._slot_freed
        self.pool.parked_is_current = self._parked_is_current

    def resolved_name(self, name: str) -> str | None:
        """The canonical name `name` last resolved to, without I/O; None when it has not (or failed)."""
        hit = self._resolved.get(name)
        return hit[1] if hit is not None and isinstance(hit[1], str) else None

    def loaded(self, canonical: str) -> ServedModel | None:
        return next((e.engine for e in self.pool.loaded() if e.name == canonical), None)

    def predict(self, name: str, reason: str) -> None:
        """A client is likely to ask for `name` soon: load it ahead when a slot is free (never blocks)."""
        self.prefetcher.predict(name, reason)

    async def acquire(self, name: str, keep_alive: Any) -> ServedModel:
        """The model for `name`, loaded if needed, leased until the request's streams close."""
        canonical = await self.resolve(name)
        try:
            pooled: ServedModel = await self.pool.acquire(canonical, keep_alive)
        except UnsupportedModel as exc:  # e.g. it does not fit: let the upstream answer for a while
            self._resolved[name] = (time.monotonic() + UNSUPPORTED_TTL_S, _bare(exc))
            raise
        except Exception:
            self._resolved.pop(name, None)  # resolve again next time (the file may have changed)
            raise
        lease = EngineLease(pooled.engine, lambda: self.pool.release(canonical))
        return replace(pooled, engine=lease)

    async def resolve(self, name: str) -> str:
        hit = self._resolved.get(name)
        if hit is not None and hit[0] > time.monotonic():
            if isinstance(hit[1], Exception):
                raise type(hit[1])(str(hit[1]))  # a fresh one: re-raising one object grows its traceback
            return hit[1]
        if len(self._resolved) > 4096:  # names are client-chosen: bound the cache
            self._resolved.clear()
        try:
            canonical = await asyncio.to_thread(self.config.resolve, name)
        except (ModelNotFound, UnsupportedModel) as exc:
            self._resolved[name] = (time.monotonic() + NEGATIVE_TTL_S, _bare(exc))
            raise
        self._resolved[name] = (math.inf, canonical)
        return canonical

    async def describe(self, canonical: str) -> ServedModel:
        """A ServedModel whose engine is a SourceView of the model (no weights read), for /api/show."""
        served = self._described.get(canonical)
        if served is None:
            served = await asyncio.to_thread(self._describe_source, canonical)
            if len(self._described) > 256:
                self._described.clear()
            self._described[canonical] = served
        return served

    async def forget(self, name: str) -> None:
        """The store changed for `name` (deleted, copied over, created): the loaded or parked model of that
        name goes (ModelPool.forget), and every resolution and description is made again on next use."""
        wanted = {name_key(name), name_key(self.resolved_name(name) or name)}
        for model in {*(e.name for e in self.pool.loaded()), *self.pool.parked.names()}:
            if name_key(model) in wanted:
                await self.pool.forget(model)
        self.changed()

    def changed(self) -> None:
        """Names resolve afresh (a model deleted is not found; one created or copied is)."""
        self._resolved.clear()
        self._described.clear()

    async def close(self) -> None:
        await self.prefetcher.close()
        try:
            await self.pool.close()
        except Exception:  # shutting down: report and go on
            logger.exception("unloading on-demand models failed")

    def _describe_source(self, canonical: str) -> ServedModel:
        describe = self.config.describe
        if describe is None:
            from velollm.engine.loader.resolve import resolve_model

            describe = resolve_model
        described = describe(canonical)
        view = described if getattr(described, "is_embedding", False) else SourceView(described)
        return ServedModel(name=canonical, engine=view, spec=canonical,
                           loaded_at=view.source.info.modified_at or time.time())

    async def _prefetchable(self, name: str) -> str | None:
        """The pool's name for `name` when a request for it would load it on demand, else None."""
        if self._served_otherwise(name):
            return None
        try:
            canonical = await self.resolve(name)
        except (ModelNotFound, UnsupportedModel, PathNotAllowed):
            return None
        room = self.config.prefetch_room
        parked = canonical in self.pool.parked  # its weights are in memory already
        if room is not None and not parked and not await asyncio.to_thread(room, canonical):
            logger.info("not loading model %r ahead: less than twice its size is free", canonical)
            return None
        return canonical

    def _slot_freed(self) -> None:
        """A keep_alive ran out and freed a slot: the predictions a request's load stopped are queued again, and the
        parked model a request used last comes back ahead (recent usage: the newer prediction, tried first)."""
        self.prefetcher.slot_freed()
        name = self.pool.most_recent_parked()
        if name is not None:
            self.predict(name, "recently used")

    def _parked_is_current(self, name: str, parked: ServedModel) -> bool:
        """Whether the files `name` resolves to are still those `parked` was loaded from (worker thread);
        True when that cannot be told (no identity, the files unreadable: the wake or load reports it)."""
        if self.config.identify is None:
            return True
        try:
            now = self.config.identify(name)
        except (VeloLLMError, OSError):
            return True
        return not now or now == engine_identity(parked.engine)

    def _load(self, name: str) -> ServedModel:
        """The ModelPool's load function (worker thread)."""
        t0 = time.perf_counter()
        engine = self.config.load(name)
        served = ServedModel(name=name, engine=engine, spec=name, load_duration_s=time.perf_counter() - t0)
        logger.info("model %r loaded on demand in %.1fs (max_model_len=%s)", name, served.load_duration_s,
                    getattr(engine, "max_model_len", "?"))
        return served
