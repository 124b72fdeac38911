"""LocalReplica: a native backend (`kind = "native"`: models this process runs itself) seen as one more
replica of its models, beside the remote backends that serve the same names.

The policies see it like any backend (`name`, `outstanding`); it has its own queue count, health and
metrics label (`backend="local"`, or the entry's name). It is not forwarded to: when the router chooses
it, the API runs the request on the engine (velollm.errors.ServeLocally) and releases the slot when the
response is complete. The engine bounds its own queue (--max-queue), so the slot count is unbounded: an
engine whose queue is full is passed over like a remote replica whose queue is full, and a request it
refuses before its first byte (full queue, engine dead) goes to the other replicas (`failed`). An engine
whose thread died is ejected for good (it never comes back; the process needs a restart).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from velollm.errors import EngineDead
from velollm.router.config import BackendConfig, RouterConfig
from velollm.router.health import Health
from velollm.router.queue import BackendQueue, Slot, release_once
from velollm.wire.names import name_key


class LocalReplica:
    """One native backend of the config: the served names of its models."""

    url = "(this process)"

    def __init__(self, config: BackendConfig, router: RouterConfig) -> None:
        self.config = config
        self.name = config.name
        self.names = config.served_names or config.models
        self._served = {name_key(n): n for n in self.names}
        self.queue = BackendQueue(0, router.max_queue, router.queue_timeout_s)
        # Active checks on: nothing probes the local engine, so an ejection (its thread died) is for good.
        self.health = Health(config.name, router.eject_after_failures, router.readmit_after_s, active_checks=True)
        self.errors: Counter[str] = Counter()
        self.requests = 0
        self.failovers = 0
        self.last_probe_ms: float | None = None

    @property
    def outstanding(self) -> int:
        return self.queue.outstanding

    @property
    def admitted(self) -> bool:
        return self.health.admitted

    def admitted_for(self, name: str) -> bool:
        return self.health.admitted

    def serves(self, name: str) -> str | None:
        return self._served.get(name_key(name))

    def model_names(self) -> list[str]:
        return list(self.names)

    def can_take(self, engine: Any) -> bool:
        """Whether the engine can take a request now: not dead (a dead one is ejected) and its queue not full
        (--max-queue). `engine` is the native model's (duck-typed: `dead`, `num_waiting`, `max_queue`)."""
        dead = getattr(engine, "dead", None)
        if isinstance(dead, str):
            self.health.eject(f"the engine thread died ({dead})")
            return False
        waiting, limit = getattr(engine, "num_waiting", 0), getattr(engine, "max_queue", None)
        return not (isinstance(limit, int) and isinstance(waiting, int) and waiting >= limit)

    def failed(self, exc: BaseException) -> None:
        """The engine refused a request it was chosen for, before its first byte (queue full, or dead: ejected);
        the API sends the request to the other replicas."""
        self.failovers += 1
        if isinstance(exc, EngineDead):
            self.errors["status"] += 1
            self.health.eject(str(exc))

    def release_on_done(self, slot: Slot, observe: Callable[[str, float], None]) -> Callable[[], None]:
        """What the API calls once the native response is complete (exactly once): the slot is freed and
        the request counted, with its duration."""
        started = time.perf_counter()

        def counted() -> None:
            self.requests += 1
            observe(self.name, time.perf_counter() - started)

        return release_once(slot, counted)
