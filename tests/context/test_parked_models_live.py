"""--max-loaded-models 1 with two on-demand models: the evicted one sleeps in host memory and comes back
without a cold load (velollm_model_loads_total{kind="host"}), answering as before; openai client."""

from __future__ import annotations

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
