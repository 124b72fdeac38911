"""ParkedModels: engines evicted by --max-loaded-models, kept asleep in host memory for a fast re-load.

A parked engine has released its KV cache and stopped its thread but kept its weights (vLLM's sleep mode
level 1), so taking it back skips reading, converting and placing the weights. Only CPU engines park:
their weights already live in host memory (a GPU engine's would hold GPU memory, so it is unloaded).
At most `budget_bytes` of weights are parked; the least recently parked go first.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

logger = logging.getLogger(__name__)


def parked_bytes(engine: Any) -> int | None:
    """The weight bytes an engine (or a wrapper of one: `.engine`) would keep parked, or None when it
    cannot park (no sleep, no model runner, not on the CPU)."""
    inner = engine
    for _ in range(3):
        inner = getattr(inner, "engine", None)
        runner = getattr(inner, "runner", None)
        if runner is not None:
            if not hasattr(engine, "sleep") or getattr(inner.device, "type", None) != "cpu":
                return None
            return int(getattr(runner, "weight_bytes", 0))
    return None


class ParkedModels:
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._engines: OrderedDict[str, tuple[Any, int]] = OrderedDict()

    def __contains__(self, name: str) -> bool:
        return name in self._engines

    def names(self) -> list[str]:
        return list(self._engines)

    @property
    def num_bytes(self) -> int:
        return sum(n for _, n in self._engines.values())

    def park(self, name: str, engine: Any) -> list[Any]:
        """Puts `engine` (asleep already) here; returns the engines that no longer fit (to shut down),
        `engine` itself when it cannot park."""
        size = parked_bytes(engine)
        if size is None or size > self.budget_bytes:
            return [engine]
        self._engines[name] = (engine, size)
        evicted = []
        while self.num_bytes > self.budget_bytes:
            old, (old_engine, _) = self._engines.popitem(last=False)
            logger.info("dropping parked model %r from host memory", old)
            evicted.append(old_engine)
        return evicted

    def peek(self, name: str) -> Any | None:
        """The engine parked as `name`, left parked (None when there is none)."""
        entry = self._engines.get(name)
        return entry[0] if entry is not None else None

    def take(self, name: str) -> Any | None:
        entry = self._engines.pop(name, None)
        return entry[0] if entry is not None else None

    def drain(self) -> list[Any]:
        engines = [e for e, _ in self._engines.values()]
        self._engines.clear()
        return engines
