"""Client-chosen model names never become metric labels: /metrics stays small whatever names arrive."""

from __future__ import annotations

import random
import string
from concurrent.futures import ThreadPoolExecutor

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import start_live, stop_live
from tests.api.stub_engine import StubEngine
from velollm.api.metrics import MAX_LABEL_CHARS, UNKNOWN_MODEL_LABEL, ServerMetrics
from velollm.api.registry import ModelRegistry

NUM_NAMES = 3000
ROUTES = (("/v1/chat/completions", lambda m: {"model": m, "messages": [{"role": "user", "content": "hi"}]}),
          ("/v1/completions", lambda m: {"model": m, "prompt": "hi"}),
          ("/api/generate", lambda m: {"model": m, "prompt": "hi"}),
          ("/api/chat", lambda m: {"model": m, "messages": [{"role": "user", "content": "hi"}]}),
          ("/api/show", lambda m: {"model": m}))


def _random_name(rng: random.Random, i: int) -> str:
    size = 400 if i % 100 == 0 else rng.randint(4, 40)  # some far over the label cap
    return "".join(rng.choices(string.ascii_lowercase + string.digits + "-_.:", k=size)) + f"-{i}"


def _series(text: str) -> list[dict[str, str]]:
    return [s.labels for family in text_string_to_metric_families(text) for s in family.samples]


def test_random_model_names_do_not_grow_metrics(tmp_path):
    proc, url, log = start_live(tmp_path, "--max-model-len", "256")
    try:
        rng = random.Random(12)
        names = [_random_name(rng, i) for i in range(NUM_NAMES)]
        with httpx.Client(timeout=60) as client:
            assert client.post(f"{url}/api/generate", json={"model": "demo", "prompt": "hi",
                                                             "options": {"num_predict": 2}}).status_code == 200
            baseline = _series(client.get(f"{url}/metrics").text)

            def send(i: int) -> int:
                path, body = ROUTES[i % len(ROUTES)]
                return client.post(f"{url}{path}", json=body(names[i])).status_code

            with ThreadPoolExecutor(8) as pool:
                statuses = set(pool.map(send, range(NUM_NAMES)))
            assert statuses <= {400, 404}, statuses
            text = client.get(f"{url}/metrics").text
        series = _series(text)
        models = {s["model"] for s in series if "model" in s}
        assert models <= {"", "demo", UNKNOWN_MODEL_LABEL}, sorted(models)[:10]
        assert UNKNOWN_MODEL_LABEL in models
        # the unknown names add one label value: a few series per route and status, not thousands
        assert len(series) - len(baseline) < 200, len(series) - len(baseline)
        assert len(text) < 200_000, len(text)
    finally:
        stop_live(proc)


class _Upstream:
    def __init__(self, names: set[str]) -> None:
        self.names = names

    def listed(self, name: str) -> str | None:
        return name if name in self.names else None


def test_labels_are_served_or_listed_names_capped():
    long_name = "org/" + "m" * 300
    models = ModelRegistry(_Upstream({"cloud-model", long_name}))  # type: ignore[arg-type]
    models.add("demo", StubEngine())
    metrics = ServerMetrics(models)
    assert metrics.label("demo") == "demo" and metrics.label("demo:latest") == "demo"
    assert metrics.label("cloud-model") == "cloud-model"
    assert metrics.label(long_name) == long_name[:MAX_LABEL_CHARS]
    assert metrics.label("made-up") == UNKNOWN_MODEL_LABEL and metrics.label("") == ""
    metrics.observe_request("x" * 10_000, "/v1/completions", 404, 0.01)
    text = metrics.render()[0].decode()
    assert 'model="unknown"' in text and "xxxx" not in text
