"""Test-only: with this folder first on PYTHONPATH and $VELOLLM_TEST_STEP_FAILURE naming a file, every forward pass
of a `velollm serve` subprocess's models raises while that file exists, as on a device with a sticky CUDA error:
each step fails (the loop itself stays alive), and so does the engine's self-check. Python imports `sitecustomize`
at start-up; VeloLLM itself has no such hook."""

from __future__ import annotations

import os

_FLAG = os.environ.get("VELOLLM_TEST_STEP_FAILURE")

if _FLAG:
    from velollm.engine import model_runner

    _load_model = model_runner.load_model

    def _load_failing_model(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        model = _load_model(*args, **kwargs)
        forward = model.forward

        def forward_or_fail(*a, **k):  # noqa: ANN002, ANN003, ANN202
            if os.path.exists(_FLAG):
                raise RuntimeError(f"test: CUDA error: an illegal memory access was encountered ({_FLAG} exists)")
            return forward(*a, **k)

        model.forward = forward_or_fail
        return model

    model_runner.load_model = _load_failing_model
