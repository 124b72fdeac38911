"""The llama.cpp reference runs with plain CPU buffers, and its crash fails a test instead of pytest."""

from __future__ import annotations

import json
import sys

import pytest

from tests.llama_cpp_ref import ReferenceCrashed, reference_scores, run_child


def test_reference_models_load_without_repacked_buffers(fixtures):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    path = str(fixtures.model("llama", "Q4_0").path)
    default = json.loads(run_child([sys.executable, "-c", "import json, sys; from tests.llama_cpp_ref import "
                                    "loaded_params; print(json.dumps(loaded_params(sys.argv[1])))", path]))
    plain = json.loads(run_child([sys.executable, "-m", "tests.llama_cpp_ref", "params", path]))
    assert default == {"use_extra_bufts": True}  # llama.cpp's default repacks: what crashed on AMX CPUs
    assert plain == {"use_extra_bufts": False}


def test_a_crashing_reference_is_an_error_not_a_dead_suite():
    with pytest.raises(ReferenceCrashed, match="SIGSEGV"):
        run_child([sys.executable, "-c", "import ctypes; ctypes.string_at(0)"])


def test_reference_scores_are_the_greedy_continuation(fixtures):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    prompt = [1, 5, 9, 12]
    scores, tokens = reference_scores(fixtures.model("llama", "Q8_0").path, prompt, n_ctx=64, greedy_steps=3)
    assert scores.shape[0] == len(prompt) + 3
    assert tokens == [int(row.argmax()) for row in scores[len(prompt) - 1 : len(prompt) + 2]]
