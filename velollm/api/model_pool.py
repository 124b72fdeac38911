"""Natively served models loaded on demand, like Ollama's scheduler.

At most `max_loaded_models` engines are loaded at once. A model stays loaded for `keep_alive` after
its last request finished (Ollama's semantics: default 5 m, 0 = unload as soon as it is idle,
negative = forever). A request for a model that is not loaded waits while an idle model is unloaded
(or, when all are busy, until one becomes idle) and its own model loads; requests for the models
that stay loaded keep flowing meanwhile. Loading is blocking and runs in a worker thread.

`prefetch(name)` loads a predicted model ahead (velollm.context.model_prefetch) into a free slot only:
it never evicts, and an idle model that was prefetched but not used yet is the first to go when a
request needs room. A request for a model being prefetched waits for that load (which is then the request's).
A request for another model never waits for a prefetch (velollm.api.load_turns): one that has not started
yields its turn, and one that is running is stopped at its next tensor, its memory freed (nothing of it is
left: velollm.engine.loader.load_stop), counted as `cancelled` in `prefetch_counts`. Stopping rather than
letting it finish first: a prefetch takes as long as a cold load (tens of seconds for a large model), the
request would wait that long for a model nobody asked for, and with one slot the request's load would evict
it at once anyway.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from velollm.api.keep_alive import DEFAULT_KEEP_ALIVE
from velollm.api.load_turns import LoadTurns
from velollm.api.loaded_model import LoadedModel
from velollm.context.model_prefetch import PrefetchStopped
from velollm.context.parked_models import ParkedModels, parked_bytes
from velollm.wire.keep_alive import keep_alive_seconds

logger = logging.getLogger(__name__)


class PrefetchSkipped(Exception):
    """A prefetch found no free slot when its turn to load came (a prefetch never evicts)."""


class PrefetchCancelled(PrefetchSkipped, PrefetchStopped):
    """A prefetch was stopped half-way: a request for another model needed its turn (its memory is freed)."""


class ModelPool:
    """Engines by model name. `load_fn(name)` is blocking and returns an object with `.shutdown()`."""

    def __init__(self, load_fn: Callable[[str], Any], max_loaded_models: int = 1,
                 default_keep_alive: float = DEFAULT_KEEP_ALIVE, host_cache_bytes: int = 0) -> None:
        if max_loaded_models < 1:
            raise ValueError("max_loaded_models must be >= 1")
        self._load_fn = load_fn
        self.max_loaded_models = max_loaded_models
        self.default_keep_alive = default_keep_alive
        self._models: dict[str, LoadedModel] = {}
        self._loading: dict[str, asyncio.Future[LoadedModel]] = {}
        # Requests waiting for a load: the loaded model starts with them counted as active, so that
        # the next load (for another model) cannot evict it before they resume.
        self._waiters: dict[str, int] = {}
        self._changed = asyncio.Condition()
        # One load at a time (as in Ollama): each load needs exactly one free slot. Requests' loads first.
        self._turns = LoadTurns()
        # Engines evicted for room, asleep with their weights in host memory (velollm.context.parked_models).
        self.parked = ParkedModels(host_cache_bytes)
        self.load_counts: Counter[tuple[str, str]] = Counter()  # (model, cold | host | prefetch) -> loads
        self.prefetch_counts: Counter[tuple[str, str]] = Counter()  # (model, used | unused | cancelled) -> prefetches
        self.on_slot_freed: Callable[[], None] | None = None  # a model's keep_alive ran out
        # (name, parked engine) -> whether its files are still the ones it was loaded from (blocking)
        self.parked_is_current: Callable[[str, Any], bool] | None = None
        self._last_used: dict[str, float] = {}  # model -> when a request last released it (monotonic)
        self._closed = False

    def loaded(self) -> list[LoadedModel]:
        """Loaded models, latest expiry first (the order of Ollama's /api/ps)."""
        return sorted(self._models.values(), key=lambda m: -(m.expires_at or math.inf))

    async def acquire(self, name: str, keep_alive: Any = None) -> Any:
        """The engine for `name`, loading it if needed; pair with `release(name)` when the request ends."""
        seconds = keep_alive_seconds(keep_alive, self.default_keep_alive)
        while True:
            entry = self._models.get(name)
            if entry is not None and entry.dead and entry.num_active == 0:
                await self._unload(entry)  # its engine thread died: load it afresh
                continue
            if entry is not None and entry.dead:
                entry.draining = True  # its requests end at once (EngineDead); then it unloads
            if entry is not None and not entry.draining:
                entry.num_active += 1
                entry.keep_alive = seconds
                entry.expires_at = None
                entry.cancel_timer()
                self._count_use(entry)
                return entry.engine
            if entry is not None:
                async with self._changed:
                    await self._changed.wait_for(lambda: name not in self._models)
                continue
            future = self._loading.get(name)
            if future is None or future.done():  # a done one is stale: its model was taken and dropped
                future = self._start_load(name)
            self._waiters[name] = self._waiters.get(name, 0) + 1
            try:
                loaded = await asyncio.shield(future)
            except PrefetchSkipped:  # skipped (needs no waiters) or stopped before this request came: load afresh
                self._drop_waiter(name)
                continue
            except asyncio.CancelledError:
                if future.done() and not future.cancelled() and future.exception() is None:
                    self.release(name)  # the load counted this request: give its slot back
                else:
                    self._drop_waiter(name)
                    # Nobody may take the model this load was for: start its keep-alive clock anyway.
                    future.add_done_callback(lambda _f: self._expire_if_unused(name))
                raise
            loaded.keep_alive = seconds
            self._count_use(loaded)
            return loaded.engine

    def release(self, name: str, keep_alive: Any = None) -> None:
        """One request on `name` finished: start its keep-alive timer when it is idle."""
        entry = self._models.get(name)
        if entry is None:
            return
        entry.num_active = max(0, entry.num_active - 1)
        entry.last_used = self._last_used[name] = time.monotonic()
        if keep_alive is not None:
            entry.keep_alive = keep_alive_seconds(keep_alive, self.default_keep_alive)
        if entry.dead:
            entry.draining = True  # unloaded once idle; the next request for it loads it afresh
        if entry.num_active == 0:
            self._schedule_expiry(entry)
            self._notify()

    @asynccontextmanager
    async def use(self, name: str, keep_alive: Any = None) -> AsyncIterator[Any]:
        engine = await self.acquire(name, keep_alive)
        try:
            yield engine
        finally:
            self.release(name)

    async def unload(self, name: str) -> bool:
        """Unload `name` now if it is idle (keep_alive 0 on a load-only request); True if it was loaded."""
        entry = self._models.get(name)
        if entry is None:
            return False
        if entry.num_active:
            entry.keep_alive = 0.0
            return True
        await self._unload(entry)  # asked for (`ollama stop`): the memory is wanted back, nothing re-wakes
        return True

    async def forget(self, name: str) -> None:
        """`name`'s files are changing (deleted, replaced): unloaded now when idle (else when its requests
        end), and its parked engine dropped, so that nothing serves the old weights again."""
        loading = self._loading.get(name)
        if loading is not None:  # a load that read the old files: let it end, then unload what it loaded
            await asyncio.gather(asyncio.shield(loading), return_exceptions=True)
        await self.unload(name)
        parked = self.parked.take(name)
        if parked is not None:
            await asyncio.to_thread(parked.shutdown)
        self._last_used.pop(name, None)

    def has_free_slot(self) -> bool:
        """A slot of --max-loaded-models is free and no load runs or waits (what a prefetch needs)."""
        return not self._closed and not self._loading and len(self._models) < self.max_loaded_models

    def can_prefetch(self, name: str) -> bool:
        """Whether `prefetch(name)` would load now: not loaded, no load running or waiting, a slot free."""
        return name not in self._models and self.has_free_slot()

    async def prefetch(self, name: str) -> bool:
        """Loads `name` ahead into a free slot (woken from host memory when parked there), never evicting;
        it then waits for a request for keep_alive like any idle model. False when it did not load; raises
        PrefetchCancelled when it was stopped half-way (a request's load needed the turn, or the pool closed)."""
        if not self.can_prefetch(name):
            return False
        future = self._start_load(name, prefetch=True)
        future.add_done_callback(lambda _f: self._expire_if_unused(name))
        try:
            await asyncio.shield(future)  # a cancelled prefetcher leaves the load to finish (close waits)
        except PrefetchCancelled:  # logged where it stopped
            raise
        except PrefetchSkipped:
            return False
        return True

    async def settled(self) -> None:
        """Returns once no load runs or waits for its turn."""
        while self._loading:
            await asyncio.gather(*(asyncio.shield(f) for f in list(self._loading.values())), return_exceptions=True)

    def most_recent_parked(self) -> str | None:
        """The parked model a request used last (what a freed slot re-wakes ahead), or None."""
        used = [n for n in self.parked.names() if n in self._last_used and n not in self._models]
        return max(used, key=self._last_used.__getitem__) if used else None

    async def close(self) -> None:
        self._closed = True
        self._turns.stop_speculative()  # a prefetch that runs stops at its next tensor instead of finishing
        running = [f for f in self._loading.values() if not f.done()]
        await asyncio.gather(*(asyncio.shield(f) for f in running), return_exceptions=True)
        for entry in list(self._models.values()):
            await self._unload(entry)
        for engine in self.parked.drain():
            await asyncio.to_thread(engine.shutdown)

    # --- internals -----------------------------------------------------------------------------

    def _start_load(self, name: str, prefetch: bool = False) -> asyncio.Future[LoadedModel]:
        future = asyncio.ensure_future(self._load(name, prefetch))
        self._loading[name] = future
        future.add_done_callback(lambda f: self._loading.pop(name) if self._loading.get(name) is f else None)
        return future

    async def _load(self, name: str, prefetch: bool = False) -> LoadedModel:
        def speculative() -> bool:  # a prefetch that no request waits for yet
            return prefetch and not self._waiters.get(name)

        async with self._turns.turn(speculative) as stop:
            if self._closed:
                self._waiters.pop(name, None)
                raise RuntimeError("the server is shutting down")
            if speculative() and len(self._models) >= self.max_loaded_models:
                raise PrefetchSkipped(name)
            await self._make_room()
            await self._drop_if_replaced(name)
            started = time.perf_counter()
            kind = "prefetch" if prefetch else "host" if name in self.parked else "cold"
            logger.info("loading model %r%s%s", name, " from host memory" if name in self.parked else "",
                        " ahead (prefetch)" if prefetch else "")
            # here, not at the top: --proxy-only imports this module and must not import velollm.engine
            from velollm.engine.loader.load_stop import LoadStopped, run_stoppable

            try:
                engine = await asyncio.to_thread(run_stoppable, stop, lambda: self._wake_or_load(name))
            except LoadStopped:
                self._waiters.pop(name, None)
                self.prefetch_counts[(name, "cancelled")] += 1
                logger.info("loading model %r ahead stopped after %.2f s: a request for another model waits",
                            name, time.perf_counter() - started)
                raise PrefetchCancelled(name) from None
            except BaseException:
                self._waiters.pop(name, None)
                raise
            self.load_counts[(name, kind)] += 1
            logger.info("model %r loaded in %.2f s (%s)", name, time.perf_counter() - started, kind)
            entry = LoadedModel(name, engine, self.default_keep_alive, num_active=self._waiters.pop(name, 0),
                                prefetched=prefetch)
            self._models[name] = entry
            self._notify()
            return entry

    async def _drop_if_replaced(self, name: str) -> None:
        """Drops the engine parked as `name` when its files were replaced since it was loaded (`ollama cp`,
        `ollama create` or a pull behind VeloLLM's back): waking it would answer with the old weights."""
        parked = self.parked.peek(name)
        if parked is None or self.parked_is_current is None:
            return
        if await asyncio.to_thread(self.parked_is_current, name, parked):
            return
        if self.parked.take(name) is parked:
            logger.info("model %r parked in host memory: its files changed since it was loaded; loading it afresh",
                        name)
            await asyncio.to_thread(parked.shutdown)

    def _wake_or_load(self, name: str) -> Any:
        engine = self.parked.take(name)
        if engine is None:
            return self._load_fn(name)
        try:
            engine.wake()
        except Exception:  # a parked engine that cannot wake is loaded afresh
            logger.exception("waking parked model %r failed; loading it again", name)
            engine.shutdown()
            return self._load_fn(name)
        return engine

    def _count_use(self, entry: LoadedModel) -> None:
        """A request found `entry` loaded ahead: a load it did not have to wait for (or only in part)."""
        if entry.prefetched:
            entry.prefetched = False
            self.prefetch_counts[(entry.name, "used")] += 1

    def _slot_freed(self) -> None:
        if self.on_slot_freed is not None and not self._closed:
            self.on_slot_freed()

    def _drop_waiter(self, name: str) -> None:
        left = self._waiters.get(name, 0) - 1
        if left > 0:
            self._waiters[name] = left
        else:
            self._waiters.pop(name, None)

    def _expire_if_unused(self, name: str) -> None:
        entry = self._models.get(name)
        if entry is not None and entry.num_active == 0 and entry.expires_at is None:
            self._schedule_expiry(entry)

    async def _make_room(self) -> None:
        async with self._changed:
            while len(self._models) >= self.max_loaded_models:
                idle = [m for m in self._models.values() if m.num_active == 0]
                if idle:  # a prediction nobody used yet goes first, then the least recently used
                    victim = min(idle, key=lambda m: (not m.prefetched, m.last_used))
                    await self._unload(victim, park=True)
                    continue
                # All busy: stop new requests on the least recently used one and wait for it to drain.
                min(self._models.values(), key=lambda m: m.last_used).draining = True
                await self._changed.wait()

    def _schedule_expiry(self, entry: LoadedModel) -> None:
        entry.start_keep_alive(lambda timed_out: self._expire(entry, timed_out))

    async def _expire(self, entry: LoadedModel, timed_out: bool = False) -> None:
        """`timed_out`: its keep_alive ran out (not 0, not drained), so its slot may re-wake a parked model."""
        if self._models.get(entry.name) is entry and entry.num_active == 0:
            await self._unload(entry)
            if timed_out:
                self._slot_freed()

    async def _unload(self, entry: LoadedModel, park: bool = False) -> None:
        """Unloads `entry`; `park`: evicted for room, so kept asleep in host memory when it fits there."""
        if self._models.get(entry.name) is not entry:
            return
        del self._models[entry.name]
        entry.cancel_timer()
        if entry.prefetched:
            self.prefetch_counts[(entry.name, "unused")] += 1
        if park and not entry.dead and parked_bytes(entry.engine) is not None and self.parked.budget_bytes:
            logger.info("parking model %r in host memory", entry.name)
            await asyncio.to_thread(entry.engine.sleep)
            for engine in self.parked.park(entry.name, entry.engine):
                await asyncio.to_thread(engine.shutdown)
        else:
            logger.info("unloading model %r", entry.name)
            await asyncio.to_thread(entry.engine.shutdown)
        self._notify()

    def _notify(self) -> None:
        async def wake() -> None:
            async with self._changed:
                self._changed.notify_all()

        asyncio.ensure_future(wake())
