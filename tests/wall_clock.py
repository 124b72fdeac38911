"""A wall clock the test moves, put in place of the `time` module that a store module reads ages with.

Expiry tests with real ages of 0.05-0.2 s failed whenever the test process stalled that long between writing a
row and reading it back (a loaded CI machine, a full garbage collection): the row had expired before the check
that it is still there. With this clock, time passes only where the test says so."""

from __future__ import annotations

import time
from types import ModuleType

import pytest


class WallClock:
    """Has the `time()` of the `time` module (all these modules read), frozen until `advance`."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wall_clock(monkeypatch: pytest.MonkeyPatch, *modules: ModuleType) -> WallClock:
    clock = WallClock()
    for module in modules:
        assert isinstance(module.time, ModuleType), f"{module.__name__} reads time another way"
        monkeypatch.setattr(module, "time", clock)
    return clock
