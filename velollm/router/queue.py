"""BackendQueue: at most `limit` requests sent to one backend at once; the rest wait here in arrival
order (their place kept), at most `max_queue` of them, each at most `timeout_s`."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from velollm.errors import Overloaded


class Slot:
    """One request's right to be sent to a backend; `release` is idempotent (a response may end
    through its body's `finally` and through its background task)."""

    __slots__ = ("_queue", "_released")

    def __init__(self, queue: BackendQueue) -> None:
        self._queue = queue
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._queue._release()


def release_once(slot: Slot, then: Callable[[], None]) -> Callable[[], None]:
    """What ends a held request: frees `slot` and runs `then` (its accounting), once however often it is
    called (a response may end through its body's `finally` and through its background task)."""
    done = False

    def release() -> None:
        nonlocal done
        if not done:
            done = True
            slot.release()
            then()

    return release


class BackendQueue:
    """A FIFO semaphore with a bounded, visible queue (`velollm_backend_queue_size{backend}`)."""

    def __init__(self, limit: int, max_queue: int, timeout_s: float) -> None:
        self.limit = limit  # 0: unbounded
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def outstanding(self) -> int:
        """Sent plus waiting: what least-outstanding balancing compares."""
        return self.in_flight + len(self._waiters)

    async def acquire(self) -> Slot:
        """A slot now, or after the requests ahead of this one; Overloaded (503) when the queue is
        full or the wait times out."""
        if self.limit == 0 or (self.in_flight < self.limit and not self._waiters):
            self.in_flight += 1
            return Slot(self)
        if len(self._waiters) >= self.max_queue:
            raise Overloaded(f"{self.in_flight} requests running and {len(self._waiters)} waiting")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.timeout_s)
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot just as it gave up: pass it on
            else:
                waiter.cancel()
                self._discard(waiter)
            if isinstance(exc, asyncio.TimeoutError):
                raise Overloaded(f"no slot free within {self.timeout_s:g} s") from exc
            raise
        return Slot(self)  # in_flight was counted for it by _release

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on: in_flight unchanged
                return
        self.in_flight -= 1

    def _discard(self, waiter: asyncio.Future[None]) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass
