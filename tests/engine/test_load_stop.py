"""A model load asked to stop (velollm.engine.loader.load_stop) stops at its next tensor, through the real
weight stream of the demo model, and leaves nothing behind: no module, no engine thread. Outside
run_stoppable, check_stop does nothing."""

from __future__ import annotations

import gc
import logging
import threading

import pytest
import torch

from velollm.engine.loader import progress
from velollm.engine.loader.load_stop import LoadStopped, check_stop, run_stoppable


def _modules() -> int:
    return sum(isinstance(o, torch.nn.Module) for o in gc.get_objects())


class StopAfter(logging.Handler):
    """Sets `stop` once the weight stream has reported `n` tensors."""

    def __init__(self, stop: threading.Event, n: int) -> None:
        super().__init__()
        self.stop, self.n, self.seen = stop, n, 0

    def emit(self, record: logging.LogRecord) -> None:
        loaded = getattr(record, "load_progress", None)
        if loaded is not None:
            self.seen = loaded.num_tensors
            if loaded.num_tensors >= self.n:
                self.stop.set()


def test_a_stopped_demo_load_stops_at_the_next_tensor_and_leaves_nothing(monkeypatch, tmp_path):
    from velollm.config import EngineConfig
    from velollm.engine.async_engine import AsyncEngine

    config = EngineConfig(device="cpu", max_num_seqs=1, kv_cache_memory=16 << 20)
    AsyncEngine.from_model("demo", config, cache_dir=str(tmp_path)).shutdown()  # generated once, outside the count
    monkeypatch.setattr(progress, "REPORT_EVERY_S", 0.0)  # a record per tensor
    gc.collect()
    modules, threads = _modules(), threading.active_count()
    stop = threading.Event()
    handler = StopAfter(stop, 3)
    progress.logger.addHandler(handler)
    old_level = progress.logger.level
    progress.logger.setLevel(logging.INFO)
    try:
        with pytest.raises(LoadStopped):
            run_stoppable(stop, lambda: AsyncEngine.from_model("demo", config, cache_dir=str(tmp_path)))
    finally:
        progress.logger.removeHandler(handler)
        progress.logger.setLevel(old_level)
    assert handler.seen == 3  # stopped at the tensor after the one that asked
    assert _modules() == modules  # no gc.collect here: run_stoppable collected what the load had built
    assert threading.active_count() == threads and not any(t.name == "velollm-engine" for t in threading.enumerate())


def test_check_stop_outside_a_stoppable_load_does_nothing():
    check_stop()
    assert run_stoppable(threading.Event(), lambda: 42) == 42
    check_stop()  # the scope ended with the load
