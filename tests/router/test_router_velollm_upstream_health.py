"""A VeloLLM configured as kind `auto` or `ollama` (users point VeloLLM at VeloLLM; `ollama` speaks to it as
to an Ollama, `auto` passes either API through: Upstream.speaks_both) is recognised by its /api/version answer
(velollm.wire.server_version) and health-checked on /health: an engine that died there ejects it, although its
/api/version still answers 200. Beside it, the backends that must not change: a healthy VeloLLM spoken to as
Ollama, an Ollama stand-in (no /health, as a real Ollama: checked on /api/version) and llama.cpp's server
(llama-cpp-python, auto -> /v1/models)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.proxy.proxy_servers import FakeOllamaState, ThreadServer, fake_ollama_app
from tests.router.replicas import (
    BUSY_HEALTH_TIMEOUT_S,
    Replica,
    config_toml,
    metric,
    router_app,
)
from tests.serve_process import REPO
from velollm import __version__
from velollm.wire.server_version import velollm_version

USER = [{"role": "user", "content": "hello there"}]
HOOK = Path(__file__).resolve().parents[1] / "hooks" / "engine_death"


def _wait_ejected(url: str, backend: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while metric(httpx.get(url + "/metrics").text, "velollm_backend_ejected", backend=backend) != 1:
        assert time.monotonic() < deadline, f"{backend} was not ejected"
        time.sleep(0.1)


@pytest.mark.timeout(600)
def test_a_velollm_behind_kind_auto_or_ollama_is_ejected_when_its_engine_died(tmp_path, monkeypatch):
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    from tests.proxy.gguf_fixture import write_tiny_llama_gguf
    from tests.proxy.test_proxy_llama_cpp import MODEL, LlamaServer

    flag = tmp_path / "die"
    path = os.pathsep.join(p for p in (str(HOOK), str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.setenv("VELOLLM_TEST_ENGINE_DEATH", str(flag))  # their engines die once the flag appears
    dying = [Replica(tmp_path / "replicas" / name).start() for name in ("auto", "ollama")]
    monkeypatch.delenv("VELOLLM_TEST_ENGINE_DEATH")
    healthy = Replica(tmp_path / "replicas" / "healthy").start()
    llama = LlamaServer(str(write_tiny_llama_gguf(tmp_path / "tiny.gguf")))
    state = FakeOllamaState(["llama3.2:latest"])
    stand_in = ThreadServer(fake_ollama_app(state)).start()
    router = None
    try:
        llama.start()
        for r in (*dying, healthy):
            r.wait_healthy()
        toml = config_toml([{"name": "dies-auto", "url": dying[0].url, "kind": "auto"},
                            {"name": "dies-ollama", "url": dying[1].url, "kind": "ollama"},
                            {"name": "velollm-as-ollama", "url": healthy.url, "kind": "ollama"},
                            {"name": "ollama", "url": stand_in.url, "kind": "auto"},
                            {"name": "llama", "url": llama.url + "/v1", "kind": "auto"}],
                           policy="round-robin", health_interval_s=0.2, health_timeout_s=BUSY_HEALTH_TIMEOUT_S)
        router = ThreadServer(router_app(toml, tmp_path)).start()
        url = router.url
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
        body = httpx.get(healthy.url + "/api/version", timeout=10).json()
        assert body["version"] and velollm_version(body) == __version__  # what tells it from an Ollama
        assert velollm_version(httpx.get(stand_in.url + "/api/version", timeout=10).json()) is None
        time.sleep(1.0)  # a few checks: all five answer theirs
        page = httpx.get(url + "/metrics").text
        assert all(metric(page, "velollm_backend_ejected", backend=b) == 0
                   for b in ("dies-auto", "dies-ollama", "velollm-as-ollama", "ollama", "llama"))

        flag.touch()
        for r in dying:  # a request makes each engine loop break (the test hook); /api/version still answers
            assert httpx.post(r.url + "/v1/chat/completions", timeout=60,
                              json={"model": "demo", "messages": USER, "max_tokens": 4}).status_code == 503
            assert httpx.get(r.url + "/api/version", timeout=10).status_code == 200
        for name in ("dies-auto", "dies-ollama"):
            _wait_ejected(url, name)
        status = {b["name"]: b for b in httpx.get(url + "/status/upstream").json()["upstream"]["backends"]}
        for name in ("dies-auto", "dies-ollama"):
            assert not status[name]["up"]
            assert "GET /health answered 503 (the engine of 'demo' died" in status[name]["reason"], status[name]
        assert all(status[b]["up"] for b in ("velollm-as-ollama", "ollama", "llama")), status

        # Every request for demo goes to the healthy replica at once, in both APIs; the others still answer.
        for _ in range(4):
            raw = client.chat.completions.with_raw_response.create(model="demo", messages=USER, max_tokens=3)
            assert raw.headers["x-velollm-backend"] == "velollm-as-ollama"
            assert raw.parse().usage.completion_tokens <= 3
        native = ollama.Client(host=url, timeout=60)
        assert native.chat(model="demo", messages=USER, options={"num_predict": 2}).done
        assert native.chat(model="llama3.2", messages=USER).message.content
        assert client.chat.completions.create(model=MODEL, messages=USER, max_tokens=4).choices[0].message.content
        page = httpx.get(url + "/metrics").text
        assert metric(page, "velollm_backend_errors_total", backend="velollm-as-ollama", kind="status") == 0
        for b in ("velollm-as-ollama", "ollama", "llama"):
            assert metric(page, "velollm_backend_ejected", backend=b) == 0
    finally:
        if router is not None:
            router.stop()
        stand_in.stop()
        llama.stop()
        for r in (*dying, healthy):
            r.stop()
