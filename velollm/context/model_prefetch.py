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
velollm.api.load_turns). `close` cancels what is queued; the pool's close stops a load already running.
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


class PrefetchPool(Protocol):
    """What velollm.api.model_pool.ModelPool offers a prefetcher."""

    def can_prefetch(self, name: str) -> bool: ...

    async def prefetch(self, name: str) -> bool: ...


class ModelPrefetcher:
    """`resolve(name)` -> the pool's name for a model it may load (same checks as a request's), or None."""

    def __init__(self, pool: PrefetchPool, resolve: Callable[[str], Awaitable[str | None]],
                 enabled: bool = True) -> None:
        self.pool = pool
        self.enabled = enabled
        self._resolve = resolve
        self._pending: OrderedDict[str, str] = OrderedDict()  # name -> why it is predicted
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def predict(self, name: str, reason: str) -> None:
        """Queues `name` for loading ahead; returns at once (never blocks the request that predicted it)."""
        if not self.enabled or self._closed or not name:
            return
        self._pending.pop(name, None)
        self._pending[name] = reason
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while self._pending:
            name, reason = self._pending.popitem()  # the newest prediction first
            try:
                await self._prefetch(name, reason)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the request that comes later reports it, if it does come
                logger.info("prefetching model %r (%s) failed: %s", name, reason, exc)

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
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
