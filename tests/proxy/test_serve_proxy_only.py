"""`velollm serve --proxy-only` as a real process: starts fast, never imports torch, streams as it comes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import ollama
import openai
import pytest

from tests.fast_enough import assert_fast
from tests.serve_process import REPO, start_serve, stop_serve

USER = [{"role": "user", "content": "hi there"}]


def test_proxy_only_starts_fast_without_torch_and_streams_through(fake_ollama, ollama_state, tmp_path):
    # -X importtime writes every import (also the lazy ones made while serving) to the log.
    proc, url, log, startup_s = start_serve(tmp_path, "--proxy-only", "--upstream", fake_ollama.url,
                                            env={"PYTHONPROFILEIMPORTTIME": "1"})
    try:
        # ~1 s on a quiet 2-core box, 2.5-3.1 s at load average 6-11; what keeps it fast (no torch, no
        # engine imported) is asserted exactly below, the bound only catches a gross regression
        assert startup_s < 6, f"--proxy-only took {startup_s:.2f}s to become healthy"
        native = ollama.Client(host=url, timeout=10)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=10)
        assert native.chat(model="llama3.2", messages=USER).message.content == "echo: hi there "
        assert native.generate(model="llama3.2", prompt="x").response == "echo: x "
        answer = client.chat.completions.create(model="llama3.2", messages=USER, max_tokens=2)
        assert (answer.choices[0].message.content, answer.choices[0].finish_reason) == ("echo: hi ", "length")
        chunks = list(client.chat.completions.create(model="llama3.2", messages=USER, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hi there "
        assert [m.model for m in native.list().models] == ollama_state.models
        assert [m.id for m in client.models.list()] == ollama_state.models

        # The `gated` model holds its stream after the first chunk until the test opens the gate:
        # the first chunk must reach the client through the whole process while the upstream waits.
        with httpx.stream("POST", f"{url}/api/chat", json={"model": "gated", "messages": USER}, timeout=10) as r:
            lines = r.iter_lines()
            first = json.loads(next(lines))
            assert first["message"]["content"] == "echo: " and not first["done"]
            assert not ollama_state.gate.is_set()
            ollama_state.gate.set()
            rest = [json.loads(line) for line in lines if line]
        assert rest[-1]["done"] and "".join(p["message"]["content"] for p in rest) == "hi there "
    finally:
        stop_serve(proc)
    imported = [line.rsplit("|", 1)[-1].strip() for line in log.read_text().splitlines() if "import time:" in line]
    assert "velollm.proxy.gateway" in imported  # the log does hold the imports
    assert not [m for m in imported if m.split(".")[0] in ("torch", "transformers", "triton", "safetensors")]
    assert [m for m in imported if m.startswith("velollm.engine.")] == []


def test_proxy_only_needs_an_upstream(tmp_path):
    result = subprocess.run([sys.executable, "-m", "velollm.cli", "serve", "--proxy-only", "--no-upstream"],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=False,
                            timeout=60)
    assert result.returncode == 2 and "--proxy-only needs an upstream" in result.stderr


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_proxy_only_upstream_down_is_a_fast_502(tmp_path, path):
    from tests.api.conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    proc, url, _, _ = start_serve(tmp_path, "--proxy-only", "--upstream", dead)
    try:
        answers = []

        def refused() -> None:
            answers.append(httpx.post(url + path, json={"model": "m", "messages": USER}, timeout=10))
            assert answers[-1].status_code == 502

        assert_fast(refused, 2)  # no retry or timeout waited out: one try of three within 2 s
        r = answers[-1]
        message = r.json()["error"]["message"] if path.startswith("/v1") else r.json()["error"]
        assert dead in message
        assert httpx.get(f"{url}/api/tags").json() == {"models": []}
        assert httpx.get(f"{url}/v1/models").json()["data"] == []
    finally:
        stop_serve(proc)


def test_proxy_only_labels_the_upstreams_models_from_the_first_request(tmp_path):
    """A second VeloLLM as the Ollama upstream, never listed before the first request: the proxied
    model's requests are labeled with its name at once (the listing is fetched for the labels), made-up
    names stay `unknown`, and they do not make the proxy list the upstream again."""
    from tests.api.conftest import ServerHandle

    (tmp_path / "up").mkdir()
    (tmp_path / "front").mkdir()
    up_proc, up_url, _, _ = start_serve(tmp_path / "up", "--model", "demo", "--max-model-len", "256",
                                        "--kv-cache-memory", "16MiB")
    try:
        proc, url, _, _ = start_serve(tmp_path / "front", "--proxy-only", "--upstream", up_url)
        try:
            front, upstream = ServerHandle("live", url), ServerHandle("live", up_url)
            native = ollama.Client(host=url, timeout=60)
            assert native.chat(model="demo", messages=USER, options={"num_predict": 2}).eval_count == 2
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
            assert client.chat.completions.create(model="demo", messages=USER, max_tokens=2).model == "demo"
            for name in ("made-up-1", "made-up-2", "made-up-3"):
                with pytest.raises(ollama.ResponseError):
                    native.chat(model=name, messages=USER)
            page = front.metrics()
            assert front.metric("velollm_requests_total", model="demo", endpoint="/api/chat", status="200") == 1
            assert front.metric("velollm_requests_total", model="demo", endpoint="/v1/chat/completions",
                                status="200") == 1
            assert front.metric("velollm_requests_total", model="unknown", endpoint="/api/chat", status="404") == 3
            assert not [labels for _, labels in page if ("model", "made-up-1") in labels]
            listings = sum(v for (name, labels), v in upstream.metrics().items()
                           if name == "velollm_requests_total" and ("endpoint", "/api/tags") in labels)
            assert listings == 1  # fetched for the first name; the made-up ones came within RELIST_INTERVAL_S
        finally:
            stop_serve(proc)
    finally:
        stop_serve(up_proc)
