"""`with gc_paused():` around a test's own measurement of stalls in pytest's process.

A full garbage collection walks the whole session's heap (thousands of tests' reports and fixtures by the end
of `make test`) and holds the GIL meanwhile: a ticker thread or event loop timed there sees gaps of a second
that no code under test caused. The collector is back on, as it was, when the block ends."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
