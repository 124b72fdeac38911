"""Test-only: with this folder first on PYTHONPATH and $VELOLLM_TEST_SLOW_LOAD="TEXT:SECONDS", a `velollm serve`
subprocess loads the on-demand models whose specifier contains TEXT slowly: SECONDS after each tensor of the
weight stream (where a load asked to stop stops), so that a test can catch a prefetch half-way. Python imports
`sitecustomize` at start-up; VeloLLM itself has no such hook."""

from __future__ import annotations

import os
import threading
import time

_SPEC = os.environ.get("VELOLLM_TEST_SLOW_LOAD")

if _SPEC:
    from velollm.api import native_models
    from velollm.engine.loader import progress

    _TEXT, _SECONDS = _SPEC.rsplit(":", 1)
    _slow = threading.local()
    _load_native, _track_progress = native_models.load_native, progress.track_progress

    def _load_native_slowly(name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        _slow.on = _TEXT in name
        try:
            return _load_native(name, *args, **kwargs)
        finally:
            _slow.on = False

    def _track_progress_slowly(weights, model, total_params):  # noqa: ANN001, ANN202
        for item in _track_progress(weights, model, total_params):
            yield item
            if getattr(_slow, "on", False):
                time.sleep(float(_SECONDS))

    native_models.load_native = _load_native_slowly
    progress.track_progress = _track_progress_slowly
