"""EngineLease: one request's hold on an on-demand engine; LeaseScope releases them per HTTP request."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

# The leases taken while handling the current HTTP request (set by LeaseScope).
_request_leases: ContextVar[list[EngineLease] | None] = ContextVar("velollm_request_leases", default=None)


class EngineLease:
    """One request's hold on an on-demand engine; attributes are the engine's.

    The pool slot is released exactly once: when the last GenerationStream holding the lease
    closes, or at the latest when the HTTP request ends (LeaseScope) — a request that failed or
    answered before generating, such as a load-only one. Outside a LeaseScope, garbage collection
    of the lease releases it.
    """

    def __init__(self, engine: Any, release: Callable[[], None]) -> None:
        self._engine = engine
        self._holders = 0
        self._finalizer = weakref.finalize(self, _release_in_loop, asyncio.get_running_loop(), release)
        scope = _request_leases.get()
        if scope is not None:
            scope.append(self)

    def __getattr__(self, name: str) -> Any:
        if name == "_engine":
            raise AttributeError(name)
        return getattr(self._engine, name)

    @property
    def released(self) -> bool:
        return not self._finalizer.alive

    def hold(self) -> None:
        self._holders += 1

    def drop(self) -> None:
        self._holders -= 1
        if self._holders <= 0:
            self._finalizer()

    def release(self) -> None:
        self._finalizer()


class LeaseScope:
    """ASGI middleware: every EngineLease taken during a request is released when its response
    (streamed or not) is complete, whatever happened in between."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        leases: list[EngineLease] = []
        token = _request_leases.set(leases)
        try:
            await self.app(scope, receive, send)
        finally:
            _request_leases.reset(token)
            for lease in leases:
                lease.release()


def _release_in_loop(loop: asyncio.AbstractEventLoop, release: Callable[[], None]) -> None:
    # A finalizer may run in any thread, in the middle of anything: defer the pool's bookkeeping.
    try:
        loop.call_soon_threadsafe(release)
    except RuntimeError:  # loop closed: the server is gone and its pool with it
        pass
