"""LocalReplica: a native backend (`kind = "native"`: models this process runs itself) seen as one more
replica of its models, beside the remote backends that serve the same names.

The policies see it like any backend (`name`, `outstanding`); it has its own queue count, health and
metrics label (`backend="local"`, or the entry's name). It is not forwarded to: when the router chooses
it, the API runs the request on the engine (velollm.errors.ServeLocally) and releases the slot when the
response is complete. The engine bounds its own queue (--max-queue), so the slot count is unbounded.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

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
        # Never ejected here: an engine that dies fails its requests itself (EngineDead) and /health says so.
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

    def serves(self, name: str) -> str | None:
        return self._served.get(name_key(name))

    def model_names(self) -> list[str]:
        return list(self.names)

    def release_on_done(self, slot: Slot, observe: Callable[[str, float], None]) -> Callable[[], None]:
        """What the API calls once the native response is complete (exactly once): the slot is freed and
        the request counted, with its duration."""
        started = time.perf_counter()

        def counted() -> None:
            self.requests += 1
            observe(self.name, time.perf_counter() - started)

        return release_once(slot, counted)
