"""ModelPrefetcher: models a client is predicted to ask for next, loaded ahead into free slots.

Predictions (the registry makes them): an on-demand model shown by `/api/show` (Open WebUI and the
ollama CLI show a model when a user picks it), the models the virtual `auto` model routes to, and,
when a keep_alive runs out and frees a slot, the parked model a request used last (re-woken from host
memory). They load one at a time, newest prediction first, through the pool's `prefetch`, which only
takes a free slot of --max-loaded-models (the registry's `resolve` also wants twice a cold model's size
free on its device): a prefetch never evicts a model, never makes a request wait
for a slot, and a load that would fail for a request (not found, does not fit) fails here too and is
only logged. A request for a model being prefetched waits for that load; a request for another model
never waits behind one (the pool stops a running prefetch at its next tensor and frees what it loaded:
velollm.api.load_turns). A prediction stopped so is queued again once, when the loads have settled and a
slot is free (then, or at the next slot a keep_alive frees: `slot_freed`), behind the predictions made since;
stopped a second time, it is dropped, so that a prediction and a stream of requests cannot take turns
forever. The predictions left waiting meanwhile wait for the request's load too instead of finding no slot.
`close` cancels what is queued; the pool's close stops a load already running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol

logger = logging.getLogger(__name__)

MAX_PENDING = 8  # predictions kept waiting; older ones are dropped (they were worth less anyway)


class PrefetchStopped(Exception):
    """A prefetch was stopped half-way because a request's load needed the turn (raised by `PrefetchPool.prefetch`)."""


class PrefetchPool(Protocol):
    """What velollm.api.model_pool.ModelPool offers a prefetcher."""

    def has_free_slot(self) -> bool: ...

    def can_prefetch(self, name: str) -> bool: ...

    async def prefetch(self, name: str) -> bool: ...

    async def settled(self) -> None: ...


class ModelPrefetcher:
    """`resolve(name)` -> the pool's name for a model it may load (same checks as a request's), or None."""

    def __init__(self, pool: PrefetchPool, resolve: Callable[[str], Awaitable[str | None]],
                 enabled: bool = True) -> None:
        self.pool = pool
        self.enabled = enabled
        self._resolve = resolve
        self._pending: OrderedDict[str, str] = OrderedDict()  # name -> why it is predicted (newest last)
        self._stopped: OrderedDict[str, str] = OrderedDict()  # stopped by a request's load, to queue again once
        self._requeued: set[str] = set()  # queued again after a stop: a second stop drops them
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def predict(self, name: str, reason: str) -> None:
        """Queues `name` for loading ahead; returns at once (never blocks the request that predicted it)."""
        if not self.enabled or self._closed or not name:
            return
        self._stopped.pop(name, None)
        self._requeued.discard(name)  # predicted anew: a stop may queue it again
        self._pending.pop(name, None)
        self._pending[name] = reason
        self._trim()
        self._wake()

    def slot_freed(self) -> None:
        """A keep_alive ran out and freed a slot: the predictions a request's load stopped are queued again."""
        self._requeue_stopped()

    def _wake(self) -> None:
        if self._pending and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self._run())

    def _trim(self) -> None:
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)

    async def _run(self) -> None:
        while self._pending:
            name, reason = self._pending.popitem()  # the newest prediction first
            try:
                await self._prefetch(name, reason)
            except PrefetchStopped:
                self._stopped_by_request(name, reason)
                await self.pool.settled()  # the request's load: the predictions left would find no slot during it
                self._requeue_stopped()
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (the request that comes later reports it, if it does come)
                logger.info("prefetching model %r (%s) failed: %s", name, reason, exc)
            self._requeued.discard(name)

    def _stopped_by_request(self, name: str, reason: str) -> None:
        if name in self._requeued:
            self._requeued.discard(name)
            logger.info("model %r (%s) was stopped again by a request's load: not loaded ahead", name, reason)
            return
        self._stopped[name] = reason
        while len(self._stopped) > MAX_PENDING:
            self._stopped.popitem(last=False)

    def _requeue_stopped(self) -> None:
        """The stopped predictions queued again when a slot is free for them, behind the predictions made since
        (the first dropped beyond MAX_PENDING); each once."""
        if not self._stopped or self._closed or not self.pool.has_free_slot():
            return
        for name, reason in reversed(self._stopped.items()):
            if name not in self._pending:  # else predicted anew meanwhile: that prediction stands
                self._pending[name] = reason
                self._pending.move_to_end(name, last=False)
                self._requeued.add(name)
                logger.info("model %r (%s) queued again to load ahead: a request's load had stopped it", name, reason)
        self._stopped.clear()
        self._trim()
        self._wake()

    async def _prefetch(self, name: str, reason: str) -> None:
        canonical = await self._resolve(name)
        if canonical is None or not self.pool.can_prefetch(canonical):
            return
        started = time.perf_counter()
        if await self.pool.prefetch(canonical):
            logger.info("model %r loaded ahead (%s) in %.2f s", canonical, reason, time.perf_counter() - started)

    async def close(self) -> None:
        self._closed = True
        self._pending.clear()
        self._stopped.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
