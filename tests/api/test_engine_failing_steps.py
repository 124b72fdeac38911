"""An engine whose every step fails (its loop alive: a persistent device fault, forced through the test-only hook
tests/hooks/step_failure/sitecustomize.py) is declared dead after a few failed requests, as if its thread had died:
503 engine_dead on both APIs and /health 503 for a pinned (--model) model; a model loaded on demand is unloaded and
the next request loads it afresh."""

from __future__ import annotations

import time

import httpx
import ollama
import openai
import pytest

from tests.api.hooked_serve import start_hooked
from tests.serve_process import stop_serve
from velollm.engine.step_failures import MAX_FAILED_STEPS

USER = [{"role": "user", "content": "hello there"}]


def _fails(client: openai.OpenAI, model: str) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=model, messages=USER, max_tokens=2)
    return info.value


@pytest.mark.timeout(300)
def test_an_engine_failing_every_step_is_dead_then_reloaded_on_demand(tmp_path):
    server = start_hooked(tmp_path, "step_failure", "VELOLLM_TEST_STEP_FAILURE")
    url, log, flag, folder, client = server.url, server.log, server.flag, server.on_demand, server.client
    try:
        assert client.chat.completions.create(model=folder, messages=USER, max_tokens=2).choices
        flag.touch()
        for _ in range(MAX_FAILED_STEPS - 1):  # each request fails on its own (500), the loop running on
            failed = _fails(client, folder)
            assert failed.status_code == 500 and "illegal memory access" in failed.body["message"]
        dead = _fails(client, folder)  # the step that shows the engine cannot run: this request's answer
        assert dead.status_code == 503 and dead.body["code"] == "engine_dead"
        deadline = time.monotonic() + 10  # dead, so unloaded once its last request ended
        while (health := httpx.get(url + "/health", timeout=10).json())["models"] != ["demo"]:
            assert time.monotonic() < deadline, health
            time.sleep(0.05)
        assert health["status"] == "ok"

        for _ in range(MAX_FAILED_STEPS - 1):  # the pinned model: its engine stays, dead
            assert _fails(client, "demo").status_code == 500
        dead = _fails(client, "demo")
        assert dead.status_code == 503 and dead.body["code"] == "engine_dead"
        assert f"EngineFailing: {MAX_FAILED_STEPS} steps failed in a row and a self-check failed too" in dead.body["message"]
        with pytest.raises(ollama.ResponseError) as native:
            ollama.Client(host=url, timeout=30).chat(model="demo", messages=USER, options={"num_predict": 2})
        assert native.value.status_code == 503 and "the engine of 'demo' stopped" in native.value.error
        health = httpx.get(url + "/health", timeout=10)
        assert health.status_code == 503 and health.json()["dead"] == ["demo"]

        flag.unlink()  # the fault gone: the on-demand model loads afresh and answers
        again = client.chat.completions.create(model=folder, messages=USER, max_tokens=2)
        assert again.usage.completion_tokens >= 1
        assert _fails(client, "demo").status_code == 503  # a pinned dead engine never comes back by itself
    finally:
        stop_serve(server.proc)
    text = log.read_text()
    assert text.count("self-check failed too") >= 2 and f"unloading model {folder!r}" in text
