"""--max-loaded-models 1 with two on-demand models: the evicted one sleeps in host memory and comes back
without a cold load (velollm_model_loads_total{kind="host"}), answering as before; openai client."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import openai
import pytest

from tests.api.conftest import ServerHandle
from tests.serve_process import start_serve, stop_serve
from velollm.context.parked_models import ParkedModels


def ask(url: str, model: str) -> list[int]:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    r = client.completions.create(model=model, prompt="The river ran", max_tokens=6, temperature=0,
                                  extra_body={"ignore_eos": True})
    return r.choices[0].text


@pytest.mark.parametrize("host_cache, kinds", [("256MiB", ["cold", "cold", "host", "host"]),
                                               ("0", ["cold", "cold", "cold", "cold"])])
def test_evicted_model_wakes_from_host_memory(tmp_path, two_models, host_cache, kinds):
    a, b = two_models
    proc, url, log, _ = start_serve(tmp_path, "--max-loaded-models", "1", "--kv-cache-memory", "16MiB",
                                    "--max-model-len", "256", "--host-cache-memory", host_cache)
    server = ServerHandle("live", url)
    try:
        answers, seen = {}, []
        for model in (a, b, a, b):
            counts = {k: server.metric("velollm_model_loads_total", model=model, kind=k) for k in ("cold", "host")}
            text = ask(url, model)
            assert answers.setdefault(model, text) == text  # a woken model answers as before
            seen += [k for k in counts if server.metric("velollm_model_loads_total", model=model, kind=k) > counts[k]]
        assert seen == kinds
    finally:
        stop_serve(proc)


def test_a_parked_model_whose_files_changed_is_loaded_afresh(tmp_path, two_models):
    """Files replaced behind VeloLLM's back while the model sleeps in host memory: waking it would answer
    with the old weights, so it is dropped and loaded cold (and answers with the new ones)."""
    import torch
    from safetensors.torch import load_file, save_file

    a, b = two_models
    proc, url, _, _ = start_serve(tmp_path, "--max-loaded-models", "1", "--kv-cache-memory", "16MiB",
                                  "--max-model-len", "256", "--host-cache-memory", "256MiB")
    server = ServerHandle("live", url)
    try:
        first = ask(url, a)
        ask(url, b)  # a sleeps in host memory
        weights = Path(a) / "model.safetensors"
        tensors = load_file(weights)
        torch.manual_seed(1)
        save_file({k: torch.randn_like(t) * t.std() for k, t in tensors.items()}, weights)
        try:
            again = ask(url, a)
            assert server.metric("velollm_model_loads_total", model=a, kind="cold") == 2
            assert server.metric("velollm_model_loads_total", model=a, kind="host") == 0
            assert again != first  # the new weights answer
        finally:
            save_file(tensors, weights)  # the fixture's folder is shared by the module's other tests
    finally:
        stop_serve(proc)


class FakeEngine:
    """A ServedModel-shaped wrapper around an engine whose model runner holds `nbytes` of weights."""

    def __init__(self, nbytes: int) -> None:
        runner = SimpleNamespace(weight_bytes=nbytes)
        self.engine = SimpleNamespace(engine=SimpleNamespace(device=SimpleNamespace(type="cpu"), runner=runner))

    def sleep(self) -> None: ...


def test_parked_models_stay_within_the_budget():
    parked = ParkedModels(100)
    one, two, big = FakeEngine(60), FakeEngine(60), FakeEngine(200)
    assert parked.park("one", one) == []
    assert parked.park("two", two) == [one] and "one" not in parked  # least recently parked goes
    assert parked.park("big", big) == [big]  # never fits: shut down instead
    assert parked.take("two") is two and parked.take("two") is None
