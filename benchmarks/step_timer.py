"""Where an engine's step time goes: host work (the GPU idles: the engine loop is synchronous) vs the
wait for the device, per kind of step. Wraps per-step calls only, so it costs a few microseconds a step.

host = schedule + runner.run (host inputs, copies, launches) + scheduler.update + output processing;
wait = the sampler (its one host read waits for the step's device work, then samples).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

KINDS = ("prefill", "decode_eager", "decode_graph")


class StepTimer:
    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.totals = {kind: {"steps": 0, "seconds": 0.0, "host": 0.0, "wait": 0.0} for kind in KINDS}
        self._host = self._wait = 0.0
        engine.scheduler.schedule = self._timed(engine.scheduler.schedule, "host")
        engine.runner.run = self._timed(engine.runner.run, "host")
        engine.scheduler.update = self._timed(engine.scheduler.update, "host")
        engine.sampler = self._timed(engine.sampler, "wait")
        self._update_outputs = engine._update_outputs
        engine._update_outputs = self._outputs
        self._step = engine.step
        engine.step = self._timed_step

    def _timed(self, fn: Callable, bucket: str) -> Callable:
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                if bucket == "host":
                    self._host += elapsed
                else:
                    self._wait += elapsed
        return wrapper

    def _outputs(self, *args, **kwargs):
        start, wait_before = time.perf_counter(), self._wait
        try:
            return self._update_outputs(*args, **kwargs)
        finally:  # output processing is host work; the sampler inside it was counted as wait
            self._host += time.perf_counter() - start - (self._wait - wait_before)

    def _timed_step(self):
        counts = dict(self.engine.runner.step_counts)
        self._host = self._wait = 0.0
        start = time.perf_counter()
        deltas = self._step()
        elapsed = time.perf_counter() - start
        after = self.engine.runner.step_counts
        kind = next((k for k in KINDS if after[k] != counts[k]), None)
        if kind is not None:
            row = self.totals[kind]
            row["steps"] += 1
            row["seconds"] += elapsed
            row["host"] += self._host
            row["wait"] += self._wait
        return deltas

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for kind, row in self.totals.items():
            if row["steps"]:
                n = row["steps"]
                out[kind] = {"steps": n, "seconds": round(row["seconds"], 3),
                             "ms_per_step": round(row["seconds"] / n * 1e3, 3),
                             "host_ms_per_step": round(row["host"] / n * 1e3, 3),
                             "wait_ms_per_step": round(row["wait"] / n * 1e3, 3)}
        return out
