"""The router in front of real backends, through the official clients: two `velollm serve` demo replicas
(one spoken to as VeloLLM, passed through in the client's API; one as an Ollama server, /v1 converted)
and an Ollama stand-in with NUM_PARALLEL=1 (max_concurrency = 1: the rest wait in VeloLLM's queue)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import ollama
import openai
import pytest

from tests.fast_enough import assert_fast
from tests.proxy.proxy_servers import FakeOllamaState, ThreadServer, fake_ollama_app
from tests.router.replicas import (
    Replica,
    assert_one_label_set_per_family,
    config_toml,
    metric,
    replica_backends,
    router_app,
    start_replicas,
)

USER = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory) -> Iterator[list[Replica]]:
    started = start_replicas(tmp_path_factory.mktemp("replicas"), 2)
    yield started
    for r in started:
        r.stop()


@pytest.fixture(scope="module")
def gated_ollama() -> Iterator[tuple[ThreadServer, FakeOllamaState]]:
    state = FakeOllamaState(["gated:latest", "llama3.2:latest"])
    server = ThreadServer(fake_ollama_app(state)).start()
    yield server, state
    state.gate.set()
    server.stop()


@pytest.fixture(scope="module")
def router(replicas, gated_ollama, tmp_path_factory) -> Iterator[ThreadServer]:
    ollama_server, _ = gated_ollama
    toml = f"""
[router]
health_interval_s = 0.5
[[backends]]
name = "r0"
url = "{replicas[0].url}"
kind = "velollm"
[[backends]]
name = "r1"
url = "{replicas[1].url}"
kind = "ollama"
[[backends]]
name = "ollama1"
url = "{ollama_server.url}"
kind = "ollama"
max_concurrency = 1
"""
    server = ThreadServer(router_app(toml, tmp_path_factory.mktemp("router"))).start()
    yield server
    server.stop()


def _openai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)


def test_replicas_share_the_load_and_both_apis_work(router):
    client = _openai(router.url)
    backends = Counter()
    for _ in range(4):
        raw = client.chat.completions.with_raw_response.create(model="demo", messages=USER, max_tokens=4)
        answer = raw.parse()
        assert answer.choices[0].finish_reason == "length" and answer.usage.completion_tokens == 4
        backends[raw.headers["x-velollm-backend"]] += 1
    assert backends == {"r0": 2, "r1": 2}  # idle replicas: least-outstanding ties go to each in turn

    chunks = list(client.chat.completions.create(model="demo", messages=USER, max_tokens=5, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens == 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"

    native = ollama.Client(host=router.url, timeout=60)
    for _ in range(2):
        answer = native.chat(model="demo", messages=USER, options={"num_predict": 3})
        assert answer.done and answer.eval_count == 3
    parts = list(native.generate(model="demo", prompt="once upon", stream=True, options={"num_predict": 3}))
    assert parts[-1].done and parts[-1].eval_count == 3


def test_listings_are_merged(router, replicas):
    client = _openai(router.url)
    assert sorted(m.id for m in client.models.list()) == ["demo", "gated:latest", "llama3.2:latest"]
    native = ollama.Client(host=router.url, timeout=60)
    assert sorted(m.model for m in native.list().models) == ["demo", "gated:latest", "llama3.2:latest"]
    running = [m.model for m in native.ps().models]
    assert running.count("demo") == 1  # both replicas run it; listed once
    assert client.models.retrieve("llama3.2:latest").id == "llama3.2:latest"


def test_one_at_a_time_to_an_ollama_with_num_parallel_1(router, gated_ollama):
    _, state = gated_ollama
    state.gate.clear()
    sent_before = len(state.requests)
    results: list[str] = []

    def chat() -> None:
        answer = ollama.Client(host=router.url, timeout=60).chat(model="gated", messages=USER, stream=True)
        results.append("".join(p.message.content for p in answer))

    threads = [threading.Thread(target=chat) for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.2)  # arrival order
    deadline = time.monotonic() + 20  # a loaded machine may take a while to queue all three
    while metric(page := httpx.get(router.url + "/metrics").text, "velollm_backend_queue_size", backend="ollama1") != 2:
        assert time.monotonic() < deadline, "the two later requests never waited in VeloLLM's queue"
        time.sleep(0.05)
    assert metric(page, "velollm_backend_in_flight", backend="ollama1") == 1
    assert len(state.requests) - sent_before == 1  # the others wait in VeloLLM, not at the backend
    state.gate.set()
    for t in threads:
        t.join(timeout=30)
    assert results == ["echo: hello there "] * 3
    page = httpx.get(router.url + "/metrics").text
    assert metric(page, "velollm_backend_queue_size", backend="ollama1") == 0
    assert_one_label_set_per_family(page)
    assert metric(page, "velollm_backend_requests_total", backend="ollama1") >= 3
    assert metric(page, "velollm_backend_ejected", backend="r0") == 0
    assert metric(page, "velollm_backend_request_duration_seconds_count", backend="ollama1") >= 3


def test_unknown_model_is_404_in_each_api(router):
    with pytest.raises(openai.NotFoundError):
        _openai(router.url).chat.completions.create(model="nope", messages=USER)
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=router.url, timeout=30).chat(model="nope", messages=USER)
    assert err.value.status_code == 404


def test_all_replicas_down_is_a_fast_503_with_retry_after(tmp_path):
    from tests.serve_process import free_port

    toml = f"""
[router]
health_interval_s = 0.2
retry_after_s = 3
[[backends]]
name = "a"
url = "http://127.0.0.1:{free_port()}"
models = ["m"]
[[backends]]
name = "b"
url = "http://127.0.0.1:{free_port()}"
models = ["m"]
"""
    server = ThreadServer(router_app(toml, tmp_path)).start()
    try:
        for path in ("/v1/chat/completions", "/api/chat"):
            def refused() -> None:
                r = httpx.post(server.url + path, json={"model": "m", "messages": USER}, timeout=10)
                assert r.status_code == 503 and r.headers["retry-after"] == "3"
                message = r.json()["error"]["message"] if path.startswith("/v1") else r.json()["error"]
                assert "no replica of 'm'" in message

            assert_fast(refused, 2)  # no retry or timeout waited out: one try of three within 2 s
        with pytest.raises(openai.InternalServerError) as err:
            _openai(server.url).chat.completions.create(model="m", messages=USER)
        assert err.value.status_code == 503
        page = httpx.get(server.url + "/metrics").text
        assert metric(page, "velollm_backend_ejected", backend="a") == 1
    finally:
        server.stop()


def test_serve_config_cli(replicas, tmp_path):
    """`velollm serve --config` as a real process: no native backend, so no engine and no torch import."""
    from tests.serve_process import start_serve, stop_serve

    config = tmp_path / "velollm.toml"
    config.write_text(config_toml(replica_backends(replicas, ("r0", "r1"))) +
                      '[models.demo]\npolicy = "round-robin"\n'
                      '[routing]\ndefault = "demo"\n')
    proc, url, log, _ = start_serve(tmp_path, "--config", str(config), env={"PYTHONPROFILEIMPORTTIME": "1"})
    try:
        seen = set()
        for _ in range(2):
            r = httpx.post(url + "/v1/completions", json={"model": "demo", "prompt": "hi", "max_tokens": 2}, timeout=60)
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
            seen.add(r.headers["x-velollm-backend"])
        assert seen == {"r0", "r1"}
        # the [routing] table of the same file: the virtual `auto` model picks demo, served by a replica
        r = httpx.post(url + "/v1/chat/completions", json={"model": "auto", "messages": USER, "max_tokens": 2},
                       timeout=60)
        assert r.status_code == 200 and r.json()["model"] == "demo"
        assert "model=demo" in r.headers["x-velollm-route"] and r.headers["x-velollm-backend"] in ("r0", "r1")
        status = httpx.get(url + "/status/upstream").json()["upstream"]
        assert status["kind"] == "router" and [b["up"] for b in status["backends"]] == [True, True]
    finally:
        stop_serve(proc)
    imported = [line.rsplit("|", 1)[-1].strip() for line in log.read_text().splitlines() if "import time:" in line]
    assert "velollm.router.router" in imported and "torch" not in imported


def test_serve_config_errors(tmp_path):
    import os
    import subprocess
    import sys

    from tests.serve_process import REPO

    bad = tmp_path / "bad.toml"
    bad.write_text('[router]\npolicy = "fastest"\n')
    good = tmp_path / "good.toml"
    good.write_text('[[backends]]\nurl = "http://127.0.0.1:1"\n')
    no_default = tmp_path / "routing.toml"
    no_default.write_text('[routing]\nname = "auto"\n')
    for args, message in ((["--config", str(bad)], "router.policy must be one of"),
                          (["--config", str(good), "--upstream", "http://x:1"], "--config names the backends"),
                          (["--config", str(no_default)], f"{no_default}: ")):
        result = subprocess.run([sys.executable, "-m", "velollm.cli", "serve", *args], cwd=REPO, capture_output=True,
                                text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])})
        assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]


def test_native_backend_beside_remote_ones(replicas, tmp_path):
    """kind = "native": this process runs the model itself (as --model would), beside the remote replicas."""
    from tests.serve_process import start_serve, stop_serve

    config = tmp_path / "velollm.toml"
    config.write_text(f'[[backends]]\nname = "local"\nkind = "native"\nmodels = ["demo"]\nserved_names = ["local-demo"]\n'
                      f'[[backends]]\nname = "r0"\nurl = "{replicas[0].url}"\nkind = "velollm"\n')
    proc, url, _, _ = start_serve(tmp_path, "--config", str(config), "--max-model-len", "256",
                                  "--kv-cache-memory", "16MiB")
    try:
        client = _openai(url)
        local = client.chat.completions.with_raw_response.create(model="local-demo", messages=USER, max_tokens=2)
        assert "x-velollm-backend" not in local.headers and local.parse().usage.completion_tokens == 2
        remote = client.chat.completions.with_raw_response.create(model="demo", messages=USER, max_tokens=2)
        assert remote.headers["x-velollm-backend"] == "r0"
        names = [m.model for m in ollama.Client(host=url, timeout=60).list().models]
        assert names[0] == "local-demo" and "demo" in names
        assert httpx.get(url + "/health").json()["models"] == ["local-demo"]
        page = httpx.get(url + "/metrics").text  # the engine's queue and the backends' queues: two families
        assert metric(page, "velollm_queue_size", model="local-demo") == 0
        assert metric(page, "velollm_backend_queue_size", backend="r0") == 0
        assert metric(page, "velollm_queue_size", backend="r0") is None
        assert_one_label_set_per_family(page)
    finally:
        stop_serve(proc)


def test_prefix_aware_keeps_a_conversation_on_its_replica(replicas, tmp_path):
    toml = config_toml(replica_backends(replicas, ("r0", "r1")), policy="prefix-aware", prefix_block_bytes=64)
    server = ThreadServer(router_app(toml, tmp_path)).start()
    try:
        client = _openai(server.url)
        homes = {}
        for user in ("alice", "bob"):
            messages = [{"role": "system", "content": f"You help {user} with the project of {user}. " * 8}]
            for turn in range(3):
                messages.append({"role": "user", "content": f"question {turn}"})
                raw = client.chat.completions.with_raw_response.create(model="demo", messages=messages, max_tokens=3)
                homes.setdefault(user, set()).add(raw.headers["x-velollm-backend"])
                messages.append({"role": "assistant", "content": raw.parse().choices[0].message.content})
        assert [len(h) for h in homes.values()] == [1, 1] and homes["alice"] != homes["bob"]
    finally:
        server.stop()


def test_a_5xx_is_retried_on_another_replica_and_ejects_after_failures(replicas, tmp_path):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    calls = []

    async def fail(request):
        calls.append(request.url.path)
        return JSONResponse({"error": "model runner crashed"}, status_code=500)

    async def version(request):
        return JSONResponse({"version": "0.12.0"})

    flaky = ThreadServer(Starlette(routes=[Route("/api/chat", fail, methods=["POST"]),
                                           Route("/api/version", version)])).start()
    toml = f"""
[router]
policy = "round-robin"
health_interval_s = 0
eject_after_failures = 2
readmit_after_s = 60
[[backends]]
name = "a-flaky"
url = "{flaky.url}"
kind = "ollama"
models = ["demo"]
[[backends]]
name = "b"
url = "{replicas[0].url}"
kind = "velollm"
models = ["demo"]
"""
    server = ThreadServer(router_app(toml, tmp_path)).start()
    try:
        native = ollama.Client(host=server.url, timeout=60)
        for _ in range(4):
            assert native.chat(model="demo", messages=USER, options={"num_predict": 2}).eval_count == 2
        assert len(calls) == 2  # two 500s, each retried on b; then a-flaky is ejected
        page = httpx.get(server.url + "/metrics").text
        assert metric(page, "velollm_backend_ejected", backend="a-flaky") == 1
        assert metric(page, "velollm_backend_errors_total", backend="a-flaky", kind="status") == 2
        assert metric(page, "velollm_backend_failovers_total", backend="a-flaky") == 2
    finally:
        server.stop()
        flaky.stop()
