"""Where an engine's step time goes: host work (the GPU idles while the engine loop is synchronous) vs the
wait for the device, per kind of step. Wraps per-step calls only, so it costs a few microseconds a step.

host = schedule + runner.run (host inputs, copies, launches) + scheduler.update + output processing;
wait = the host read of the sampled ids: the sampler call in an engine that samples and reads in one
(its one host read waits for the step's device work), else `SampledTokens.to_host` (an engine that samples
on the device and reads the ids later: with asynchronous scheduling the wait overlaps the next step's host
work, so host + wait can exceed the step). `detach()` takes every wrapper off again.
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
        self._undo: list[Callable[[], None]] = []
        try:
            self._wrap(engine.scheduler, "schedule", self._timed(engine.scheduler.schedule, "host"))
            self._wrap(engine.runner, "run", self._timed(engine.runner.run, "host"))
            self._wrap(engine.scheduler, "update", self._timed(engine.scheduler.update, "host"))
            if hasattr(engine.sampler, "sample_on_device"):  # samples on the device, reads the ids later
                from velollm.engine import sampler as sampler_module

                self._wrap(engine.sampler, "sample_on_device", self._timed(engine.sampler.sample_on_device, "host"))
                tokens = sampler_module.SampledTokens
                self._wrap(tokens, "to_host", self._timed(tokens.to_host, "wait"))  # the class: one per step
                outputs = "_collect"
            else:
                self._wrap(engine, "sampler", self._timed(engine.sampler, "wait"))
                outputs = "_update_outputs"
            self._wrap(engine, outputs, self._outputs(getattr(engine, outputs)))
            self._step = engine.step
            self._wrap(engine, "step", self._timed_step)
        except AttributeError:
            self.detach()
            raise

    def _wrap(self, owner: Any, name: str, wrapper: Any) -> None:
        had = name in vars(owner)
        before = vars(owner).get(name)
        setattr(owner, name, wrapper)
        self._undo.append(lambda: setattr(owner, name, before) if had else delattr(owner, name))

    def detach(self) -> None:
        """Take the wrappers off (the engine, and the sampler's class, are as they were)."""
        while self._undo:
            self._undo.pop()()

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

    def _outputs(self, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            start, wait_before = time.perf_counter(), self._wait
            try:
                return fn(*args, **kwargs)
            finally:  # output processing is host work; the read of the ids inside it was counted as wait
                self._host += time.perf_counter() - start - (self._wait - wait_before)
        return wrapper

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
