"""The local engine as a replica that can fail: its thread dying (an exception escaping the engine loop, forced
through the test-only tests/hooks/engine_death/sitecustomize.py) ejects it and the remote replica takes every
request, none failing; a server with only that engine answers 503 engine_dead in each client's wire format, at
once, and /health says it died. And a local engine whose --max-queue is full passes requests to the remote
replica instead of answering 503."""

from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.router.replicas import (
    BUSY_HEALTH_TIMEOUT_S,
    Replica,
    config_toml,
    metric,
    replica_backends,
    start_replicas,
)
from tests.serve_process import REPO, start_serve, stop_serve

USER = [{"role": "user", "content": "hello there"}]
ENGINE_ARGS = ("--max-model-len", "256", "--kv-cache-memory", "16MiB", "--max-num-seqs", "8")
HOOK = Path(__file__).resolve().parents[1] / "hooks" / "engine_death"


def _hook_env(flag: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(HOOK), str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "VELOLLM_TEST_ENGINE_DEATH": str(flag)}


def _ask(url: str, i: int, max_tokens: int = 4) -> str:
    """One request (openai, openai streamed, ollama streamed in turn): the backend that answered."""
    if i % 3 == 2:
        with httpx.stream("POST", url + "/api/chat", timeout=120,
                          json={"model": "demo", "messages": USER, "options": {"num_predict": max_tokens}}) as r:
            lines = [line for line in r.iter_lines() if line]
            assert r.status_code == 200 and '"done":true' in lines[-1].replace(" ", ""), lines[-1:]
            return r.headers["x-velollm-backend"]
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
    if i % 3 == 1:
        with client.chat.completions.with_streaming_response.create(model="demo", messages=USER, stream=True,
                                                                     max_tokens=max_tokens) as raw:
            chunks = list(raw.parse())
            assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("length", "stop")
            return raw.headers["x-velollm-backend"]
    raw = client.chat.completions.with_raw_response.create(model="demo", messages=USER, max_tokens=max_tokens)
    assert 1 <= raw.parse().usage.completion_tokens <= max_tokens  # (sampled: the demo model may end early)
    return raw.headers["x-velollm-backend"]


def _burst(url: str, n: int, max_tokens: int = 4) -> Counter[str]:
    with ThreadPoolExecutor(8) as pool:
        return Counter(pool.map(lambda i: _ask(url, i, max_tokens), range(n)))


def test_a_single_engine_server_answers_503_when_its_engine_died(tmp_path):
    flag = tmp_path / "die"
    proc, url, log, _ = start_serve(tmp_path, *ENGINE_ARGS, "--no-upstream", env=_hook_env(flag))
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=30)
        assert client.chat.completions.create(model="demo", messages=USER, max_tokens=2).usage.completion_tokens == 2
        flag.touch()
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as first:  # in flight when the loop broke
            client.chat.completions.create(model="demo", messages=USER, max_tokens=8)
        assert first.value.status_code == 503 and first.value.body["code"] == "engine_dead"
        assert "RuntimeError: test: the engine loop broke" in first.value.body["message"]
        with pytest.raises(openai.APIStatusError) as streamed:  # refused up front, before any event
            list(client.chat.completions.create(model="demo", messages=USER, max_tokens=8, stream=True))
        assert streamed.value.status_code == 503 and "restart the server" in streamed.value.body["message"]
        with pytest.raises(ollama.ResponseError) as native:
            ollama.Client(host=url, timeout=30).chat(model="demo", messages=USER, options={"num_predict": 2})
        assert native.value.status_code == 503 and "the engine of 'demo' stopped" in native.value.error
        assert time.monotonic() - started < 20  # answers, not hangs
        health = httpx.get(url + "/health", timeout=10)
        assert health.status_code == 503
        assert health.json()["status"] == "error" and health.json()["dead"] == ["demo"]
        assert "the engine of 'demo' died (RuntimeError" in health.json()["error"]
    finally:
        stop_serve(proc)
    assert "engine thread of 'demo' died" in log.read_text()


@pytest.mark.timeout(600)
def test_the_router_ejects_a_dead_local_engine_and_the_remote_replica_takes_over(tmp_path):
    replicas = start_replicas(tmp_path / "replicas", 1)
    flag = tmp_path / "die"
    config = tmp_path / "velollm.toml"
    config.write_text(config_toml([{"name": "local", "kind": "native", "models": ["demo"]},
                                   *replica_backends(replicas, ("r0",))], policy="round-robin", health_interval_s=30,
                                   health_timeout_s=BUSY_HEALTH_TIMEOUT_S))
    proc, url, log, _ = start_serve(tmp_path, "--config", str(config), *ENGINE_ARGS, env=_hook_env(flag))
    try:
        assert set(_burst(url, 6)) == {"local", "r0"}
        flag.touch()
        served = _burst(url, 12)  # none fails: those the local engine took go to r0 before their first byte
        assert served == {"r0": 12}, served
        page = httpx.get(url + "/metrics").text
        assert metric(page, "velollm_backend_ejected", backend="local") == 1
        assert metric(page, "velollm_backend_failovers_total", backend="local") >= 1
        assert metric(page, "velollm_backend_in_flight", backend="local") == 0
        status = {b["name"]: b for b in httpx.get(url + "/status/upstream").json()["upstream"]["backends"]}
        assert not status["local"]["up"] and "engine" in status["local"]["reason"] and status["r0"]["up"]
        health = httpx.get(url + "/health", timeout=10)
        assert health.status_code == 503 and health.json()["dead"] == ["demo"]
        assert ollama.Client(host=url, timeout=60).chat(model="demo", messages=USER,
                                                        options={"num_predict": 2}).eval_count == 2
    finally:
        stop_serve(proc)
        for r in replicas:
            r.stop()


@pytest.mark.timeout(600)
def test_a_full_local_queue_sends_requests_to_the_remote_replica(tmp_path):
    replicas = start_replicas(tmp_path / "replicas", 1)
    config = tmp_path / "velollm.toml"
    config.write_text(config_toml([{"name": "local", "kind": "native", "models": ["demo"]},
                                   *replica_backends(replicas, ("r0",))], policy="round-robin", health_interval_s=30,
                                   health_timeout_s=BUSY_HEALTH_TIMEOUT_S))
    # One sequence running and one waiting at most: round-robin alone would hand the local engine more.
    proc, url, log, _ = start_serve(tmp_path, "--config", str(config), "--max-model-len", "256",
                                    "--kv-cache-memory", "16MiB", "--max-num-seqs", "1", "--max-queue", "1")
    try:
        served = _burst(url, 16, max_tokens=48)  # none answers 503
        assert sum(served.values()) == 16 and served["local"] >= 1 and served["r0"] > served["local"], served
        page = httpx.get(url + "/metrics").text
        assert metric(page, "velollm_backend_ejected", backend="local") == 0  # busy is not broken
        assert metric(page, "velollm_backend_in_flight", backend="local") == 0
    finally:
        stop_serve(proc)
        for r in replicas:
            r.stop()
    assert "Traceback" not in log.read_text()


@pytest.mark.timeout(600)
def test_a_remote_velollm_whose_engine_died_is_ejected_by_its_health_check(tmp_path, monkeypatch):
    """A `velollm` backend is checked on /health (not /api/version, which a dead engine still answers): its
    503 engine_dead answers go to the other replica at once, and the first of them or the check ejects it (whichever
    comes first: tests/router/test_router_engine_dead_ejection.py has the answer alone, checks off); the check keeps
    it out."""
    flag = tmp_path / "die"
    monkeypatch.setenv("PYTHONPATH", _hook_env(flag)["PYTHONPATH"])
    monkeypatch.setenv("VELOLLM_TEST_ENGINE_DEATH", str(flag))
    replicas = [Replica(tmp_path / "replicas" / "r0").start()]  # its engine dies when the flag appears
    monkeypatch.delenv("VELOLLM_TEST_ENGINE_DEATH")
    replicas.append(Replica(tmp_path / "replicas" / "r1").start())
    for r in replicas:
        r.wait_healthy()
    config = tmp_path / "velollm.toml"
    config.write_text(config_toml(replica_backends(replicas, ("r0", "r1")), policy="round-robin",
                                  health_interval_s=0.2, health_timeout_s=BUSY_HEALTH_TIMEOUT_S))
    proc, url, _, _ = start_serve(tmp_path, "--config", str(config))
    try:
        assert set(_burst(url, 6)) == {"r0", "r1"}
        flag.touch()
        served = _burst(url, 9)  # none fails
        assert sum(served.values()) == 9 and served["r1"] == 9, served
        deadline = time.monotonic() + 10
        while metric(httpx.get(url + "/metrics").text, "velollm_backend_ejected", backend="r0") != 1:
            assert time.monotonic() < deadline, "r0 was not ejected"
            time.sleep(0.1)
        status = {b["name"]: b for b in httpx.get(url + "/status/upstream").json()["upstream"]["backends"]}
        reason = status["r0"]["reason"]  # "GET /health answered 503 (...died...)" or "POST ... engine_dead (...died)"
        assert "answered 503" in reason and "died" in reason and status["r1"]["up"], reason
        time.sleep(0.6)  # checks ran since: still out
        assert metric(httpx.get(url + "/metrics").text, "velollm_backend_ejected", backend="r0") == 1
    finally:
        stop_serve(proc)
        for r in replicas:
            r.stop()
