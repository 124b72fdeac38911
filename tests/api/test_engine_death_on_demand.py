"""A model loaded on demand whose engine thread died is unloaded once its requests ended (503 engine_dead), so
/health is healthy again and the next request loads it afresh; a pinned (--model) one stays served. The loop is
broken through the test-only hook tests/hooks/engine_death/sitecustomize.py."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.api.hooked_serve import start_hooked
from tests.serve_process import stop_serve

USER = [{"role": "user", "content": "hello there"}]


def test_a_dead_on_demand_model_is_unloaded_and_loads_again(tmp_path):
    server = start_hooked(tmp_path, "engine_death", "VELOLLM_TEST_ENGINE_DEATH")
    url, log, flag, folder, client = server.url, server.log, server.flag, server.on_demand, server.client
    try:
        assert client.chat.completions.create(model=folder, messages=USER, max_tokens=2).choices
        flag.touch()
        with pytest.raises(openai.APIStatusError) as dead:
            client.chat.completions.create(model=folder, messages=USER, max_tokens=2)
        assert dead.value.status_code == 503 and dead.value.body["code"] == "engine_dead"
        flag.unlink()
        deadline = time.monotonic() + 10  # unloaded once its request ended (the lease is released after the answer)
        while (health := httpx.get(url + "/health", timeout=10).json())["status"] != "ok":
            assert time.monotonic() < deadline, health
            time.sleep(0.05)
        assert health["models"] == ["demo"]
        again = client.chat.completions.create(model=folder, messages=USER, max_tokens=2)
        assert again.usage.completion_tokens >= 1  # loaded afresh
        assert client.chat.completions.create(model="demo", messages=USER, max_tokens=2).choices
        assert httpx.get(url + "/health", timeout=10).status_code == 200
    finally:
        stop_serve(server.proc)
    text = log.read_text()
    assert text.count("engine thread of") == 1 and f"unloading model {folder!r}" in text
