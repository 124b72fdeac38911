"""Test-only: with this folder first on PYTHONPATH and $VELOLLM_TEST_ENGINE_DEATH naming a file, a `velollm serve`
subprocess's engine loop breaks (an exception outside step(), which nothing in the loop catches) at the first
step after that file appears. Python imports `sitecustomize` at start-up; VeloLLM itself has no such hook."""

from __future__ import annotations

import os

_FLAG = os.environ.get("VELOLLM_TEST_ENGINE_DEATH")

if _FLAG:
    from velollm.engine import async_engine

    _dispatch = async_engine.AsyncEngine._dispatch

    def _dispatch_or_die(self, deltas):  # noqa: ANN001, ANN202
        if os.path.exists(_FLAG):
            raise RuntimeError(f"test: the engine loop broke ({_FLAG} exists)")
        return _dispatch(self, deltas)

    async_engine.AsyncEngine._dispatch = _dispatch_or_die
