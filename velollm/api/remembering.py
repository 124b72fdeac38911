"""Remembering: finished turns being written into a model's TurnCache on worker threads, so that the model's
next turn waits for them before its prompt is tokenized.

Remembering a turn hashes its prompt and answer text and copies their ids (TurnCache.remember_turn): about
0.6 s for a 1.3M-token prompt, during which the event loop, had it run there, answered nothing (/health, every
other stream). On a worker thread it may still be running when the conversation's next turn arrives (a client
sends it on [DONE]); that turn's prompt then starts with the previous prompt and answer only once they are
remembered, so the fit awaits the model's turns in flight first (`settled`), on the loop, never on a worker
thread (a worker waiting for a remember queued behind it in the same pool could wait for ever).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Remembering:
    """Per model, the tasks remembering its turns; each is held here until done (a task only weakly referenced
    may be collected)."""

    def __init__(self) -> None:
        self._tasks: dict[str, set[asyncio.Task[None]]] = {}

    def start(self, model: str, work: Callable[[], None]) -> asyncio.Task[None]:
        """`work` (a turn of `model` remembered) run on a worker thread; `settled(model)` waits for it."""
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(work))
        self._tasks.setdefault(model, set()).add(task)
        task.add_done_callback(lambda done: self._done(model, done))
        return task

    async def settled(self, model: str) -> None:
        """Once every turn of `model` that ended before this call is remembered (or failed to be)."""
        tasks = self._tasks.get(model)
        if tasks:
            await asyncio.wait(list(tasks))

    def num_running(self, model: str) -> int:
        return len(self._tasks.get(model, ()))

    def _done(self, model: str, task: asyncio.Task[None]) -> None:
        tasks = self._tasks.get(model)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._tasks[model]
        if not task.cancelled() and task.exception() is not None:
            logger.warning("turn of %s not remembered: %r", model, task.exception())
