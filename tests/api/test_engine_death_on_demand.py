"""A model loaded on demand whose engine thread died is unloaded once its requests ended (503 engine_dead), so
/health is healthy again and the next request loads it afresh; a pinned (--model) one stays served. The loop is
broken through the test-only hook tests/hooks/engine_death/sitecustomize.py."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.serve_process import REPO, start_serve, stop_serve

HOOK = Path(__file__).resolve().parents[1] / "hooks" / "engine_death"
USER = [{"role": "user", "content": "hello there"}]


def test_a_dead_on_demand_model_is_unloaded_and_loads_again(tmp_path):
    flag = tmp_path / "die"
    path = os.pathsep.join(p for p in (str(HOOK), str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    proc, url, log, _ = start_serve(tmp_path, "--max-model-len", "256", "--kv-cache-memory", "16MiB",
                                    "--no-upstream", env={"PYTHONPATH": path, "VELOLLM_TEST_ENGINE_DEATH": str(flag)})
    try:
        [config] = (tmp_path / "cache").rglob("config.json")  # the pinned demo's folder: a copy loads on demand
        folder = tmp_path / "on-demand"
        shutil.copytree(config.parent, folder)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
        assert client.chat.completions.create(model=str(folder), messages=USER, max_tokens=2).choices
        flag.touch()
        with pytest.raises(openai.APIStatusError) as dead:
            client.chat.completions.create(model=str(folder), messages=USER, max_tokens=2)
        assert dead.value.status_code == 503 and dead.value.body["code"] == "engine_dead"
        flag.unlink()
        deadline = time.monotonic() + 10  # unloaded once its request ended (the lease is released after the answer)
        while (health := httpx.get(url + "/health", timeout=10).json())["status"] != "ok":
            assert time.monotonic() < deadline, health
            time.sleep(0.05)
        assert health["models"] == ["demo"]
        again = client.chat.completions.create(model=str(folder), messages=USER, max_tokens=2)
        assert again.usage.completion_tokens >= 1  # loaded afresh
        assert client.chat.completions.create(model="demo", messages=USER, max_tokens=2).choices
        assert httpx.get(url + "/health", timeout=10).status_code == 200
    finally:
        stop_serve(proc)
    text = log.read_text()
    assert text.count("engine thread of") == 1 and f"unloading model {str(folder)!r}" in text
