"""The server process's start-up heap, frozen once its models are loaded.

A full garbage collection walks every object the collector tracks, on whichever thread triggers it, holding the
GIL: in a served process that is the imports (torch, transformers, the app: about 220,000 objects), walked again
each time long-lived objects grow by a quarter. A request that allocates many, e.g. the parse of a 1 MiB Ollama
template in its worker thread, triggered one after another, and each stopped the event loop: /health answered
in 0.9-2.8 s at load 5-8 on 2 cores (0.5 s at most with the heap frozen). `gc.freeze()` moves what exists
now to a generation the collector skips; what requests create later is collected as before.

The heap is thawed at exit (atexit, before the interpreter's finalization): frozen, the extension objects (triton's
nanobind types) outlived their modules' teardown, nanobind printed hundreds of "leaked" lines, and `velollm run`'s
in-process server exited with a segmentation fault."""

from __future__ import annotations

import atexit
import gc
import logging
import time

logger = logging.getLogger(__name__)


def freeze_startup_heap() -> None:
    """Collects once (start-up's cyclic garbage is freed, not frozen), then freezes what is left."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    atexit.unregister(_thaw)  # once, however many servers a process starts
    atexit.register(_thaw)
    logger.info("start-up heap frozen: %d objects, %.2f s", gc.get_freeze_count(), time.perf_counter() - started)


def _thaw() -> None:
    """At exit: the frozen objects back in the collector's care, and collected as they would have been."""
    gc.unfreeze()
    gc.collect()
