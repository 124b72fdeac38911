"""A VeloLLM replica whose engine dies while it streams an answer (the 200 already went out) ends the stream with an
engine_dead error in the wire's format, and the router, relaying it untouched, ejects the replica on that line as
it would on a 503 engine_dead: with active health checks off, the next requests all go to the other replica. The
ways a stream reaches a VeloLLM through the router: the openai client's chat and Responses streams and the ollama
client's chat stream passed through (kind velollm), and the openai client's chat stream converted to /api/chat (kind
ollama). The engine dies by the test-only hook tests/hooks/engine_death, switched on once the stream runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.proxy.proxy_servers import ThreadServer
from tests.router.replicas import Replica, config_toml, metric, router_app

USER = [{"role": "user", "content": "hello there"}]
HOOKS = Path(__file__).resolve().parents[1] / "hooks"
NO_CHECKS = {"policy": "round-robin", "health_interval_s": 0, "eject_after_failures": 10, "readmit_after_s": 600}
LONG = 400  # tokens asked for (ignore_eos): the stream still runs when the engine is made to die
DIED = "stopped|died|engine"


def _openai_chat(url: str, die: Callable[[], None]) -> None:
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
    with pytest.raises(openai.APIError, match=DIED):
        for i, _chunk in enumerate(sdk.chat.completions.create(model="demo", messages=USER, max_tokens=LONG,
                                                               stream=True, extra_body={"ignore_eos": True})):
            if i == 1:
                die()


def _openai_responses(url: str, die: Callable[[], None]) -> None:
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
    events = []
    for event in sdk.responses.create(model="demo", input="hello there", max_output_tokens=LONG, stream=True,
                                      extra_body={"ignore_eos": True}):
        events.append(event)
        if event.type == "response.output_text.delta" and len(events) < 8:
            die()
    assert [e.type for e in events[-2:]] == ["error", "response.failed"], [e.type for e in events[-4:]]
    assert events[-2].code == "engine_dead"


def _ollama_chat(url: str, die: Callable[[], None]) -> None:
    native = ollama.Client(host=url, timeout=120)
    with pytest.raises(ollama.ResponseError, match=DIED):
        for i, _part in enumerate(native.chat(model="demo", messages=USER, stream=True,
                                              options={"num_predict": LONG, "ignore_eos": True})):
            if i == 1:
                die()


# (kind of the dying backend, the client's stream)
CASES: list[tuple[str, Callable[[str, Callable[[], None]], None]]] = [
    ("velollm", _openai_chat), ("velollm", _ollama_chat), ("velollm", _openai_responses), ("ollama", _openai_chat)]


@pytest.fixture(scope="module")
def healthy(tmp_path_factory) -> Iterator[Replica]:
    replica = Replica(tmp_path_factory.mktemp("healthy") / "ok").start()
    try:
        yield replica.wait_healthy()
    finally:
        replica.stop()


def _router(tmp_path: Path, dead: Replica, healthy: Replica, kind: str) -> ThreadServer:
    # round-robin in name order: the router's first request goes to "ok", its second to "dead"
    backends = [{"name": "dead", "url": dead.url, "kind": kind, "models": ["demo"]},
                {"name": "ok", "url": healthy.url, "kind": "velollm", "models": ["demo"]}]
    tmp_path.mkdir(parents=True, exist_ok=True)
    return ThreadServer(router_app(config_toml(backends, **NO_CHECKS), tmp_path)).start()


def _short(url: str) -> str:
    answer = httpx.post(url + "/v1/chat/completions", json={"model": "demo", "messages": USER, "max_tokens": 2},
                        timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.headers["x-velollm-backend"]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("kind,stream", CASES, ids=[f"{k}-{s.__name__.strip('_')}" for k, s in CASES])
def test_a_stream_ended_by_a_dead_engine_ejects_its_backend(tmp_path, healthy, kind, stream):
    flag = tmp_path / "die"
    dead = Replica(tmp_path / "dead", env={"PYTHONPATH": str(HOOKS / "engine_death"),
                                           "VELOLLM_TEST_ENGINE_DEATH": str(flag)}).start().wait_healthy()
    server = _router(tmp_path / "router", dead, healthy, kind)
    try:
        assert _short(server.url) == "ok"
        stream(server.url, flag.touch)  # the router's second request: to "dead", whose engine dies while it streams
        page = httpx.get(server.url + "/metrics").text
        assert metric(page, "velollm_backend_ejected", backend="dead") == 1
        assert metric(page, "velollm_backend_errors_total", backend="dead", kind="stream") == 1
        assert metric(page, "velollm_backend_ejected", backend="ok") == 0
        status = {b["name"]: b for b in httpx.get(server.url + "/status/upstream").json()["upstream"]["backends"]}
        assert not status["dead"]["up"] and "ended with engine_dead" in status["dead"]["reason"], status["dead"]
        assert [_short(server.url) for _ in range(3)] == ["ok"] * 3  # round-robin would have sent one to "dead"
        page = httpx.get(server.url + "/metrics").text
        assert metric(page, "velollm_backend_requests_total", backend="dead") == 1
    finally:
        server.stop()
        dead.stop()


@pytest.mark.timeout(300)
def test_the_dead_engines_last_ollama_line_carries_its_code(tmp_path):
    """What the router reads on /api: the x-velollm-error header went out with the 200, so the line says it."""
    flag = tmp_path / "die"
    dead = Replica(tmp_path / "dead", env={"PYTHONPATH": str(HOOKS / "engine_death"),
                                           "VELOLLM_TEST_ENGINE_DEATH": str(flag)}).start().wait_healthy()
    try:
        body = {"model": "demo", "messages": USER, "options": {"num_predict": LONG, "ignore_eos": True}}
        with httpx.stream("POST", dead.url + "/api/chat", json=body, timeout=120) as answer:
            assert answer.status_code == 200
            lines = []
            for line in answer.iter_lines():
                lines.append(line)
                flag.touch()
        last = httpx.Response(200, content=lines[-1]).json()
        assert last["code"] == "engine_dead" and "stopped" in last["error"], lines[-2:]
    finally:
        dead.stop()
