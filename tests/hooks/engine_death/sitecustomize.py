"""Test-only: with this folder first on PYTHONPATH and $VELOLLM_TEST_ENGINE_DEATH naming a file, a `velollm serve`
subprocess's engine loop breaks (an exception outside step(), which nothing in the loop catches) at the first
step after that file appears; when the file names a model (its served name), only that model's engine. Python
imports `sitecustomize` at start-up; VeloLLM itself has no such hook."""

from __future__ import annotations

import os

_FLAG = os.environ.get("VELOLLM_TEST_ENGINE_DEATH")

if _FLAG:
    from velollm.engine import async_engine

    _dispatch = async_engine.AsyncEngine._dispatch

    def _dispatch_or_die(self, deltas):  # noqa: ANN001, ANN202
        if os.path.exists(_FLAG) and _named(self):
            raise RuntimeError(f"test: the engine loop broke ({_FLAG} exists)")
        return _dispatch(self, deltas)

    def _named(engine) -> bool:  # noqa: ANN001
        try:
            with open(_FLAG) as f:
                name = f.read().strip()
        except OSError:
            return False
        return not name or name == engine.served_name

    async_engine.AsyncEngine._dispatch = _dispatch_or_die
