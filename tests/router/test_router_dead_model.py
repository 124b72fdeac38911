"""A VeloLLM serving two models (two engines) whose engine of one dies: only that model leaves the replica's rotation
(router/dead_models.py); its other model keeps being routed there, and the dead one's requests go to the other
replica. Noticed from the stream the death ends (passive, health checks off), then from the backend's /health 503
`dead` list (active checks: the backend stays admitted). Real replicas; the engine of `a` dies by the test-only hook
tests/hooks/engine_death, its flag naming `a`, while a stream of `a` runs."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.proxy.proxy_servers import ThreadServer
from tests.router.replicas import Replica, config_toml, metric, router_app

USER = [{"role": "user", "content": "hello there"}]
HOOKS = Path(__file__).resolve().parents[1] / "hooks"
ENGINE = ("--max-model-len", "512", "--kv-cache-memory", "16MiB", "--max-num-seqs", "4", "--no-upstream")
CHECKS_OFF = {"policy": "round-robin", "health_interval_s": 0, "eject_after_failures": 10, "readmit_after_s": 600}


def _router(tmp_path: Path, multi: Replica, other: Replica, **router) -> ThreadServer:
    # round-robin in name order, per model: a model's first request goes to "other", its second to "multi"
    backends = [{"name": "multi", "url": multi.url, "kind": "velollm", "models": ["a", "b"]},
                {"name": "other", "url": other.url, "kind": "velollm", "models": ["a"]}]
    tmp_path.mkdir(parents=True, exist_ok=True)
    return ThreadServer(router_app(config_toml(backends, **router), tmp_path)).start()


def _ask(url: str, model: str) -> str:
    answer = httpx.post(url + "/v1/chat/completions", json={"model": model, "messages": USER, "max_tokens": 2},
                        timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.headers["x-velollm-backend"]


def _multi(url: str) -> dict:
    return {b["name"]: b for b in httpx.get(url + "/status/upstream").json()["upstream"]["backends"]}["multi"]


def _assert_only_a_is_out(url: str) -> None:
    assert [_ask(url, "b") for _ in range(3)] == ["multi"] * 3
    assert [_ask(url, "a") for _ in range(3)] == ["other"] * 3  # round-robin would have sent one to "multi"
    status = _multi(url)
    assert status["up"] and status["dead_models"] == ["a"], status
    assert metric(httpx.get(url + "/metrics").text, "velollm_backend_ejected", backend="multi") == 0


@pytest.mark.timeout(600)
def test_one_dead_engine_takes_only_its_model_out_of_the_replicas_rotation(tmp_path):
    flag = tmp_path / "die"
    multi = Replica(tmp_path / "multi", "--model", "demo", "--served-model-name", "a", "--model", "demo",
                    "--served-model-name", "b", *ENGINE,
                    env={"PYTHONPATH": str(HOOKS / "engine_death"), "VELOLLM_TEST_ENGINE_DEATH": str(flag)}).start()
    other = Replica(tmp_path / "other", "--model", "demo", "--served-model-name", "a", *ENGINE).start()
    try:
        multi.wait_healthy()
        other.wait_healthy()
        server = _router(tmp_path / "passive", multi, other, **CHECKS_OFF)
        try:
            assert _ask(server.url, "a") == "other"
            sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)
            with pytest.raises(openai.APIError, match="stopped"):
                for i, _chunk in enumerate(sdk.chat.completions.create(
                        model="a", messages=USER, max_tokens=400, stream=True, extra_body={"ignore_eos": True})):
                    if i == 1:
                        flag.write_text("a")  # a's engine dies at its next step; b's runs on
            _assert_only_a_is_out(server.url)
        finally:
            server.stop()

        health = httpx.get(multi.url + "/health", timeout=10)
        assert health.status_code == 503 and health.json()["dead"] == ["a"]
        server = _router(tmp_path / "active", multi, other, policy="round-robin", health_interval_s=0.2)
        try:
            deadline = time.monotonic() + 20
            while _multi(server.url)["dead_models"] != ["a"]:
                assert time.monotonic() < deadline, _multi(server.url)
                time.sleep(0.1)
            _assert_only_a_is_out(server.url)
        finally:
            server.stop()
    finally:
        multi.stop()
        other.stop()
