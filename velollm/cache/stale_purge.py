"""StalePurge: a model's cached answers are deleted once its name stands for another model.

Every key holds the identity of the model its name stood for (velollm/api/model_identity.py): the Ollama manifest
digest, the files, an upstream's listed digest. When the files change (`ollama cp`, a delete and create, a pull,
files replaced behind VeloLLM's back, an upstream's model replaced), the old entries can no longer be reached, but
would stay in every store (SQLite, Redis, the semantic index) until their TTL or the LRU took them. The change is
noticed where the identity is used: each lookup tells `seen` the identity its request's model has now. The first
time a name is seen in this process (entries stored before a restart) and whenever its identity differs from the
last one seen, the name's entries of any other identity are deleted from every tier, in the background: one purge at
a time, each bounded (PURGE_MAX_S; SQLite in short batches on a worker thread, Redis by a ZSCAN in batches), so no
request waits for one. An empty identity (only the name known: an OpenAI-compatible upstream, a model whose files
could not be read just now) deletes nothing. A name VeloLLM itself is about to delete, copy over or create (`forget`,
from the server's model management) has all its entries deleted at once, so a model deleted and never asked for
again does not leave them behind.

Replicas sharing a Redis delete each other's entries of a name when they disagree about its identity: for the
seconds a change takes to reach each of them, or for good when they serve different models under one name.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from velollm.wire.names import name_key

logger = logging.getLogger(__name__)

PURGE_MAX_S = 30.0  # one purge gives up after this (the rest leaves by TTL / LRU, or at the next change)
MAX_NAMES = 4096  # names are client-chosen: bound the table (forgetting one only costs a purge that finds nothing)

# (model name, the identity whose entries stay (None: none stay), monotonic deadline) -> entries deleted
Purge = Callable[[str, str | None, float], Awaitable[int]]


class StalePurge:
    def __init__(self, purge: Purge) -> None:
        self.purge = purge
        self._current: dict[str, str] = {}  # model name -> the identity last seen for it
        self._pending: dict[str, str | None] = {}  # names to purge -> the identity kept, in the order seen
        self._task: asyncio.Task[None] | None = None

    def seen(self, model: str, identity: str) -> None:
        """A request for `model` found it standing for `identity` now (no I/O; a purge starts in the background)."""
        if not identity or self._current.get(model) == identity:
            return
        if len(self._current) >= MAX_NAMES:
            self._current.clear()
        self._current[model] = identity
        self._purge_later(model, identity)

    def forget(self, model: str) -> None:
        """`model` is about to stand for another model, or none (VeloLLM deletes, copies over or creates it): every
        entry of it goes, under each spelling of the name seen (Ollama's rule: case, `:latest`)."""
        key = name_key(model)
        for name in [model, *(n for n in self._current if name_key(n) == key)]:
            self._current.pop(name, None)
            self._purge_later(name, None)

    def _purge_later(self, model: str, keep: str | None) -> None:
        self._pending.pop(model, None)  # to the end of the queue
        self._pending[model] = keep
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    def outdated(self, model: str, identity: str) -> bool:
        """Whether an answer made under `identity` is older than the identity `model` has been seen with since (it
        would be stored only to be purged)."""
        current = self._current.get(model)
        return current is not None and current != identity

    async def _run(self) -> None:
        while self._pending:
            model = next(iter(self._pending))
            identity = self._pending.pop(model)
            started = time.monotonic()
            try:
                removed = await self.purge(model, identity, started + PURGE_MAX_S)
            except Exception:  # a purge that fails leaves the entries to TTL / LRU; serving goes on
                logger.warning("cache: purging the old entries of %r failed", model, exc_info=True)
                continue
            if removed:
                logger.info("cache: %d entries of %r deleted (it stands for another model now) in %.0f ms",
                            removed, model, (time.monotonic() - started) * 1e3)

    async def idle(self) -> None:
        """Returns once no purge runs or waits (tests, close)."""
        while self._task is not None and not self._task.done():
            await asyncio.wait({self._task})

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
