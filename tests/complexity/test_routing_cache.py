"""The virtual model with `--cache` and Ollama's unload request: `velollm serve` with a [routing] table,
official clients. A hit replays the route that produced the answer; `ollama stop smart` unloads nothing."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import ServerHandle
from tests.complexity.serve_table import CODE, ROUTING, small_and_big
from tests.serve_process import start_serve, stop_serve

openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("routing_cache")
    (folder / "velollm.toml").write_text(ROUTING)
    proc, url, log, _ = start_serve(folder, *small_and_big(folder / "velollm.toml"), "--cache",
                                    "--max-model-len", "256", "--kv-cache-memory", "16MiB")
    try:
        yield ServerHandle("live", url, log=log)
    finally:
        stop_serve(proc)


def _chat(server: ServerHandle, stream: bool = False):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    return client.chat.completions.with_raw_response.create(
        model="smart", max_tokens=4, temperature=0, stream=stream, messages=[{"role": "user", "content": CODE}])


def test_a_hit_replays_the_route_and_the_chosen_model(server):
    first = _chat(server)
    assert first.headers["x-velollm-cache"] == "miss"
    route = first.headers["x-velollm-route"]
    assert route.startswith("code; model=big; ")
    server.wait_metric("velollm_cache_entries", lambda v: v >= 1)
    decisions = server.metric("velollm_routed_requests_total", route="code", model="big")
    again = _chat(server)
    assert again.headers["x-velollm-cache"] == "hit-exact" and again.headers["x-velollm-route"] == route
    assert again.parse().model == "big"
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content
    streamed = _chat(server, stream=True)
    assert streamed.headers["x-velollm-cache"] == "hit-exact" and streamed.headers["x-velollm-route"] == route
    assert {chunk.model for chunk in streamed.parse()} == {"big"}
    # A replay is no decision: the counter of decisions stays, the request counts under the chosen model.
    assert server.metric("velollm_routed_requests_total", route="code", model="big") == decisions
    assert server.metric("velollm_requests_total", model="big", endpoint="/v1/chat/completions", status="200") >= 3


def test_an_ollama_hit_replays_the_default_route(server):
    def generate():
        return httpx.post(f"{server.url}/api/generate", timeout=60, json={
            "model": "smart", "prompt": "Good morning!", "stream": False, "options": {"temperature": 0,
                                                                                   "num_predict": 3}})

    first = generate()
    assert first.headers["x-velollm-cache"] == "miss"
    assert first.headers["x-velollm-route"] == "default; model=small; no rule matched"
    server.wait_metric("velollm_cache_entries", lambda v: v >= 2)
    hit = generate()
    assert hit.headers["x-velollm-cache"] == "hit-exact"
    assert hit.headers["x-velollm-route"] == first.headers["x-velollm-route"]
    assert hit.json()["model"] == "small" and hit.json()["response"] == first.json()["response"]
    assert "x-velollm-route" not in hit.json()  # the stored header never leaks into a body


def test_unload_of_the_virtual_model_answers_like_ollama_and_unloads_nothing(server):
    client = ollama.Client(host=server.url, timeout=60)
    assert client.generate(model="big", prompt="hi", options={"num_predict": 1}).done
    loaded = sorted(m.model for m in client.ps().models)
    answer = client.generate(model="smart", keep_alive=0)
    assert answer.done and answer.done_reason == "unload" and answer.model == "smart"
    chat = client.chat(model="smart", messages=[], keep_alive=0)
    assert chat.done and chat.done_reason == "unload" and chat.message.content == ""
    assert sorted(m.model for m in client.ps().models) == loaded
    assert client.generate(model="big", prompt="hi", options={"num_predict": 1}).done  # still served


def test_a_responses_hit_replays_the_route_and_the_chosen_model(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    kw = {"model": "smart", "input": CODE, "max_output_tokens": 4, "temperature": 0}
    entries = server.metric("velollm_cache_entries")
    first = client.responses.with_raw_response.create(**kw)
    assert first.headers["x-velollm-cache"] == "miss"
    route = first.headers["x-velollm-route"]
    assert route.startswith("code; model=big; ") and first.parse().model == "big"
    server.wait_metric("velollm_cache_entries", lambda v: v > entries)
    decisions = server.metric("velollm_routed_requests_total", route="code", model="big")
    requests = server.metric("velollm_requests_total", model="big", endpoint="/v1/responses", status="200")
    again = client.responses.with_raw_response.create(**kw)
    assert again.headers["x-velollm-cache"] == "hit-exact" and again.headers["x-velollm-route"] == route
    hit = again.parse()
    assert hit.model == "big" and hit.output_text == first.parse().output_text and hit.id != first.parse().id
    assert client.responses.retrieve(hit.id).model == "big"  # stored as it was answered
    with client.responses.with_streaming_response.create(stream=True, **kw) as streamed:
        assert streamed.headers["x-velollm-cache"] == "hit-exact" and streamed.headers["x-velollm-route"] == route
        events = list(streamed.parse())
    assert {e.response.model for e in events if hasattr(e, "response")} == {"big"}
    assert server.metric("velollm_routed_requests_total", route="code", model="big") == decisions  # no decision
    assert server.metric("velollm_requests_total", model="big", endpoint="/v1/responses",
                         status="200") == requests + 2
