"""Passive ejection of a VeloLLM replica whose engine died, with active health checks off (health_interval_s = 0):
its 503 engine_dead answer (OpenAI wire: the body's code; Ollama wire: no code in the body, the x-velollm-error
header on both) ejects it at once and the request goes to the other replica, through the openai and ollama clients,
passed through (kind velollm) or converted (kind ollama). Both deaths: the engine thread dying (the test-only hook
tests/hooks/engine_death) and every step failing (EngineFailing, tests/hooks/step_failure: two requests answered 500
before the third shows the engine dead). A busy replica's 503 (overloaded) ejects nothing."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.proxy.proxy_servers import ThreadServer
from tests.router.replicas import Replica, config_toml, metric, router_app
from velollm.engine.step_failures import MAX_FAILED_STEPS

USER = [{"role": "user", "content": "hello there"}]
HOOKS = Path(__file__).resolve().parents[1] / "hooks"
# One sequence at a time and one waiting: a burst makes it answer 503 overloaded.
BUSY_ARGS = ("--max-model-len", "512", "--kv-cache-memory", "16MiB", "--max-num-seqs", "1", "--max-queue", "1",
             "--no-upstream")
# Ejected for good within a test: only the engine_dead answer can have ejected it (a failure count would need 10).
NO_CHECKS = {"policy": "round-robin", "health_interval_s": 0, "eject_after_failures": 10, "readmit_after_s": 600}


@pytest.fixture(scope="module")
def healthy(tmp_path_factory) -> Iterator[Replica]:
    replica = Replica(tmp_path_factory.mktemp("healthy") / "ok", *BUSY_ARGS).start()
    try:
        yield replica.wait_healthy()
    finally:
        replica.stop()


def _hooked(folder: Path, hook: str, switch: str, flag: Path) -> Replica:
    return Replica(folder, env={"PYTHONPATH": str(HOOKS / hook), switch: str(flag)}).start().wait_healthy()


def _router(tmp_path: Path, dead: Replica, healthy: Replica, kind: str) -> ThreadServer:
    backends = [{"name": "dead", "url": dead.url, "kind": kind, "models": ["demo"]},
                {"name": "ok", "url": healthy.url, "kind": "velollm", "models": ["demo"]}]
    tmp_path.mkdir(parents=True, exist_ok=True)
    return ThreadServer(router_app(config_toml(backends, **NO_CHECKS), tmp_path)).start()


def _ask(url: str, client: str, i: int) -> None:
    """One request through `client`'s SDK, streamed every other time; it must succeed."""
    if client == "ollama":
        native = ollama.Client(host=url, timeout=120)
        if i % 2:
            parts = list(native.chat(model="demo", messages=USER, options={"num_predict": 2}, stream=True))
            assert parts[-1].done and parts[-1].eval_count == 2
        else:
            assert native.chat(model="demo", messages=USER, options={"num_predict": 2}).eval_count == 2
        return
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
    if i % 2:
        chunks = list(sdk.chat.completions.create(model="demo", messages=USER, max_tokens=2, stream=True))
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("length", "stop")
    else:
        assert 1 <= sdk.chat.completions.create(model="demo", messages=USER, max_tokens=2).usage.completion_tokens


def _backends(url: str) -> dict[str, dict]:
    return {b["name"]: b for b in httpx.get(url + "/status/upstream").json()["upstream"]["backends"]}


def _assert_ejected_for_engine_dead(url: str, num_answers: int) -> None:
    """`dead` answered `num_answers` requests, each sent on to `ok`, and was ejected by the last (engine_dead)."""
    page = httpx.get(url + "/metrics").text
    assert metric(page, "velollm_backend_ejected", backend="dead") == 1
    assert metric(page, "velollm_backend_requests_total", backend="dead") == num_answers
    assert metric(page, "velollm_backend_failovers_total", backend="dead") == num_answers
    assert metric(page, "velollm_backend_errors_total", backend="dead", kind="status") == num_answers
    assert metric(page, "velollm_backend_ejected", backend="ok") == 0
    status = _backends(url)
    assert not status["dead"]["up"] and "engine_dead" in status["dead"]["reason"] and status["ok"]["up"]


@pytest.mark.timeout(600)
def test_an_engine_that_died_is_ejected_on_its_answer_without_health_checks(tmp_path, healthy):
    flag = tmp_path / "die"
    flag.touch()  # its engine loop breaks at its first step
    dead = _hooked(tmp_path / "dead", "engine_death", "VELOLLM_TEST_ENGINE_DEATH", flag)
    try:
        # The first request that reaches it kills it (503 engine_dead, in flight); later ones are refused up front.
        for kind, client in (("velollm", "openai"), ("velollm", "ollama"), ("ollama", "openai")):
            server = _router(tmp_path / f"router-{kind}-{client}", dead, healthy, kind)
            try:
                for i in range(4):  # round-robin: one of the first two goes to dead; none fails
                    _ask(server.url, client, i)
                _assert_ejected_for_engine_dead(server.url, 1)
                assert metric(httpx.get(server.url + "/metrics").text, "velollm_backend_requests_total",
                              backend="ok") == 4
            finally:
                server.stop()
        # What the router read: the code in the OpenAI body, and on both wires the header (Ollama's body has none).
        wire = httpx.post(dead.url + "/v1/chat/completions", json={"model": "demo", "messages": USER}, timeout=30)
        assert wire.status_code == 503 and wire.json()["error"]["code"] == "engine_dead"
        assert wire.headers["x-velollm-error"] == "engine_dead"
        wire = httpx.post(dead.url + "/api/chat", json={"model": "demo", "messages": USER}, timeout=30)
        assert wire.status_code == 503 and wire.headers["x-velollm-error"] == "engine_dead"
        assert "the engine of 'demo' stopped" in wire.json()["error"]
    finally:
        dead.stop()


@pytest.mark.timeout(600)
def test_an_engine_failing_every_step_is_ejected_when_it_is_declared_dead(tmp_path, healthy):
    flag = tmp_path / "fault"
    failing = _hooked(tmp_path / "failing", "step_failure", "VELOLLM_TEST_STEP_FAILURE", flag)
    server = _router(tmp_path / "router", failing, healthy, "velollm")
    try:
        for i in range(4):
            _ask(server.url, ("openai", "ollama")[i % 2], i)
        assert metric(httpx.get(server.url + "/metrics").text, "velollm_backend_requests_total", backend="dead") == 2
        flag.touch()  # each request it takes fails (500, sent to ok) until the third shows it dead (503 engine_dead)
        for i in range(2 * MAX_FAILED_STEPS + 4):
            _ask(server.url, ("openai", "ollama")[i % 2], i)
        page = httpx.get(server.url + "/metrics").text
        assert metric(page, "velollm_backend_requests_total", backend="dead") == 2 + MAX_FAILED_STEPS
        assert metric(page, "velollm_backend_failovers_total", backend="dead") == MAX_FAILED_STEPS
        assert metric(page, "velollm_backend_errors_total", backend="dead", kind="status") == MAX_FAILED_STEPS
        assert metric(page, "velollm_backend_ejected", backend="dead") == 1
        assert "engine_dead" in _backends(server.url)["dead"]["reason"]
    finally:
        server.stop()
        failing.stop()
    assert "self-check failed too" in failing.log_tail()  # declared dead by its engine (EngineFailing)


@pytest.mark.timeout(300)
def test_a_busy_replica_answering_503_is_not_ejected(tmp_path, healthy):
    backends = [{"name": "ok", "url": healthy.url, "kind": "velollm", "models": ["demo"]}]
    server = ThreadServer(router_app(config_toml(backends, health_interval_s=0, eject_after_failures=1),
                                     tmp_path)).start()
    try:
        def chat(i: int) -> httpx.Response:
            path = "/api/chat" if i % 2 else "/v1/chat/completions"
            body = {"model": "demo", "messages": USER, "max_tokens": 64, "ignore_eos": True,
                    "options": {"num_predict": 64}, "stream": False}
            return httpx.post(healthy.url + path, json=body, timeout=120)

        with ThreadPoolExecutor(6) as pool:  # straight at the replica: both wires say why in the header
            answers = list(pool.map(chat, range(6)))
        busy = [r for r in answers if r.status_code == 503]
        assert busy and all(r.headers["x-velollm-error"] == "overloaded" for r in busy), [r.text for r in answers]

        def routed(i: int) -> int:
            try:
                openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120).chat.completions \
                    .create(model="demo", messages=USER, max_tokens=64, extra_body={"ignore_eos": True})
                return 200
            except openai.APIStatusError as exc:
                return exc.status_code

        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(routed, range(6)))
        assert 503 in statuses and 200 in statuses, statuses
        page = httpx.get(server.url + "/metrics").text
        assert metric(page, "velollm_backend_ejected", backend="ok") == 0  # busy is not broken
        assert metric(page, "velollm_backend_errors_total", backend="ok", kind="status") in (None, 0)
    finally:
        server.stop()
