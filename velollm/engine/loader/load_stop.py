"""Stopping a model load half-way: a speculative load (a prefetch) whose turn a request for another model
needs (velollm.api.model_pool).

`run_stoppable(stop, load)` runs a blocking load with `stop` in scope; the weight stream (every tensor of
progress.track_progress) and the model runner (before the KV cache is sized, before CUDA graphs are captured)
call `check_stop()`, which raises LoadStopped once `stop` is set. Nothing half-built survives: the exception
unwinds the constructors before any engine thread starts, and run_stoppable collects what they left
(reference cycles included) before it raises, so the memory is free for the load that comes next (on CUDA
the next load's KV sizing empties the allocator's cache first). A ContextVar rather than an argument, for
the reason progress is a log record: no callback threads through the engine's constructors.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")

_STOP: ContextVar[threading.Event | None] = ContextVar("velollm_load_stop", default=None)


class LoadStopped(Exception):
    """The load was asked to stop (its `stop` event was set) and stopped; nothing of it is left."""


def check_stop() -> None:
    """Raises LoadStopped when the load running in this context was asked to stop (no-op outside one)."""
    stop = _STOP.get()
    if stop is not None and stop.is_set():
        raise LoadStopped("the model load was stopped")


def run_stoppable(stop: threading.Event, load: Callable[[], T]) -> T:
    """`load()` (blocking) with `stop` in scope; LoadStopped, once what it had built is collected, when
    `stop` was set before it finished."""
    token = _STOP.set(stop)
    try:
        return load()
    except LoadStopped:
        pass  # raised again below, outside this handler: its traceback, and the frames holding tensors, go
    finally:
        _STOP.reset(token)
    gc.collect()
    raise LoadStopped("the model load was stopped")
