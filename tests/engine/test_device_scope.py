"""device_scope: an engine on cuda:N makes its device current wherever its kernels launch (Triton and CUDA
graphs use the current device, not their tensors'): while it builds the runner, in every step and when it
wakes. CPU engines and a plain "cuda" change nothing."""

from __future__ import annotations

import contextlib

import torch

from velollm.engine import llm_engine
from velollm.engine.device import device_scope

from .helpers import greedy, make_engine, random_prompts, run_all


def test_cuda_n_is_made_current_and_cpu_or_plain_cuda_is_left_alone():
    scope = device_scope(torch.device("cuda:1"))  # built without touching CUDA
    assert isinstance(scope, torch.cuda.device) and scope.idx == 1
    assert isinstance(device_scope(torch.device("cpu")), contextlib.nullcontext)
    assert isinstance(device_scope(torch.device("cuda")), contextlib.nullcontext)


def test_the_engine_builds_steps_and_wakes_inside_its_device_scope(llama_folder, monkeypatch):
    inside: list[bool] = [False]
    entered: list[torch.device] = []

    @contextlib.contextmanager
    def recording(device):
        entered.append(device)
        inside[0] = True
        try:
            yield
        finally:
            inside[0] = False

    monkeypatch.setattr(llm_engine, "device_scope", recording)
    from velollm.engine.model_runner import ModelRunner

    run, init, reacquire = ModelRunner.run, ModelRunner.__init__, ModelRunner.reacquire

    def checked(method):
        def call(self, *args, **kwargs):
            assert inside[0], f"ModelRunner.{method.__name__} ran outside the engine's device scope"
            return method(self, *args, **kwargs)
        return call

    monkeypatch.setattr(ModelRunner, "run", checked(run))
    monkeypatch.setattr(ModelRunner, "__init__", checked(init))
    monkeypatch.setattr(ModelRunner, "reacquire", checked(reacquire))
    for async_scheduling in (False, True):
        engine = make_engine(llama_folder, async_scheduling=async_scheduling)
        assert len(run_all(engine, random_prompts([5, 9]), greedy(4))) == 2
        engine.sleep()
        engine.wake()
        assert len(run_all(engine, random_prompts([6]), greedy(3))) == 1
    assert set(entered) == {torch.device("cpu")}


def test_the_self_check_runs_inside_the_device_scope(llama_folder, monkeypatch):
    """AsyncEngine's loop calls failures.check() (a self-check through the model) outside LLMEngine.step."""
    from velollm.engine import step_failures

    seen: list[torch.device] = []

    @contextlib.contextmanager
    def recording(device):
        seen.append(device)
        yield

    monkeypatch.setattr(step_failures, "device_scope", recording)
    engine = make_engine(llama_folder)
    assert engine.failures.self_check() is None and seen == [torch.device("cpu")]
