"""LoadTurns: one model load at a time (as in Ollama: each load needs the memory the one before it left, and
sizes its KV cache from what is free), loads for requests before speculative ones (prefetches).

A turn is taken with `async with turns.turn(speculative) as stop:`. `speculative()` is asked again whenever it
matters (a request may come to wait for a prefetch's model, which makes that load a request's). When a turn
is handed on, the first waiting non-speculative load (in arrival order) gets it, so a prefetch that has not
started yields its place to every request that comes meanwhile. A speculative load that is running when a
request's load comes to wait is asked to stop (`stop` is set): the load, run under
velollm.engine.loader.load_stop, ends at its next tensor, with nothing of it left in memory, instead of
making the request wait for a model nobody asked for yet (a prefetch of a large model takes as long as a
cold load: tens of seconds).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Turn:
    speculative: Callable[[], bool]
    granted: asyncio.Future[None]
    stop: threading.Event = field(default_factory=threading.Event)


class LoadTurns:
    """The load queue of one ModelPool."""

    def __init__(self) -> None:
        self._holder: _Turn | None = None
        self._waiting: list[_Turn] = []

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @asynccontextmanager
    async def turn(self, speculative: Callable[[], bool]) -> AsyncIterator[threading.Event]:
        """Waits for this load's turn; yields the event that asks it to stop (set only for a speculative one)."""
        me = _Turn(speculative, asyncio.get_running_loop().create_future())
        if self._holder is None and not self._waiting:
            self._holder = me
        else:
            self._waiting.append(me)
            self._preempt()
            try:
                await me.granted
            except asyncio.CancelledError:
                if self._holder is me:  # granted, then cancelled before it resumed: hand the turn on
                    self._hand_on()
                elif me in self._waiting:
                    self._waiting.remove(me)
                raise
        try:
            yield me.stop
        finally:
            self._hand_on()

    def stop_speculative(self) -> None:
        """Asks a speculative load that runs to stop (the server shuts down: nobody will use it)."""
        if self._holder is not None and self._holder.speculative():
            self._holder.stop.set()

    def _preempt(self) -> None:
        holder = self._holder
        if holder is not None and holder.speculative() and any(not w.speculative() for w in self._waiting):
            holder.stop.set()

    def _hand_on(self) -> None:
        self._holder = None
        self._waiting = [w for w in self._waiting if not w.granted.done()]  # cancelled while waiting
        if not self._waiting:
            return
        chosen = next((w for w in self._waiting if not w.speculative()), self._waiting[0])
        self._waiting.remove(chosen)
        self._holder = chosen
        chosen.granted.set_result(None)
