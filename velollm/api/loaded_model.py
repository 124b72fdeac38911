"""LoadedModel: one engine in the ModelPool and its bookkeeping, with its keep-alive clock."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoadedModel:
    """A loaded engine and its bookkeeping; `expires_at` is wall-clock time (None while in use)."""

    name: str
    engine: Any
    keep_alive: float
    num_active: int = 0
    expires_at: float | None = None
    last_used: float = field(default_factory=time.monotonic)
    draining: bool = False
    prefetched: bool = False  # loaded ahead by a prediction and not used yet
    _timer: asyncio.TimerHandle | None = None

    @property
    def dead(self) -> bool:
        """Its engine thread died (ServedModel.dead): it never serves again, so the pool unloads it."""
        return isinstance(getattr(self.engine, "dead", None), str)

    def start_keep_alive(self, expire: Callable[[bool], Coroutine[Any, Any, None]]) -> None:
        """It went idle: `expire(timed_out)` runs at once when it is draining or its keep_alive is 0,
        after keep_alive seconds (timed_out=True) otherwise, never for an infinite one."""
        self.cancel_timer()
        if self.draining or self.keep_alive == 0:
            self.expires_at = time.time()
            asyncio.ensure_future(expire(False))
        elif math.isinf(self.keep_alive):
            self.expires_at = math.inf
        else:
            self.expires_at = time.time() + self.keep_alive
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.keep_alive, lambda: asyncio.ensure_future(expire(True)))

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
