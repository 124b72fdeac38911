"""The local native engine as one replica among remote ones: `velollm serve --config` with a native `demo`
backend and a second `velollm serve` serving `demo`. Concurrent requests (openai and ollama clients) are
spread over both (per-backend counters); with the remote replica killed the local one takes everything,
and no request fails (those sent to the dead one are retried locally before their first byte)."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import ollama
import openai
import pytest

from tests.router.replicas import (
    BUSY_HEALTH_TIMEOUT_S,
    config_toml,
    metric,
    replica_backends,
    start_replicas,
)
from tests.serve_process import start_serve, stop_serve

USER = [{"role": "user", "content": "hello there"}]
ENGINE_ARGS = ("--max-model-len", "256", "--kv-cache-memory", "16MiB", "--max-num-seqs", "8")


def _ask(url: str, i: int) -> str:
    """One request, alternating clients and streaming; the backend that answered (x-velollm-backend).
    Greedy: sampled, the demo model may end early on EOS, and the token counts checked here would vary."""
    if i % 3 == 2:  # the ollama client (streamed): the backend header is not exposed, ask over httpx
        body = {"model": "demo", "messages": USER, "options": {"num_predict": 4, "temperature": 0}}
        with httpx.stream("POST", url + "/api/chat", timeout=120, json=body) as r:
            lines = [line for line in r.iter_lines() if line]
            assert r.status_code == 200 and '"done":true' in lines[-1].replace(" ", ""), lines[-1:]
            return r.headers["x-velollm-backend"]
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
    if i % 3 == 1:
        with client.chat.completions.with_streaming_response.create(model="demo", messages=USER, max_tokens=4,
                                                                     temperature=0,
                                                                     stream=True) as raw:
            chunks = list(raw.parse())
            assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
            return raw.headers["x-velollm-backend"]
    raw = client.chat.completions.with_raw_response.create(model="demo", messages=USER, max_tokens=4,
                                                     temperature=0)
    assert raw.parse().usage.completion_tokens == 4
    return raw.headers["x-velollm-backend"]


def _burst(url: str, n: int) -> Counter[str]:
    with ThreadPoolExecutor(8) as pool:
        return Counter(pool.map(lambda i: _ask(url, i), range(n)))


@pytest.mark.timeout(600)
def test_local_engine_is_one_replica_and_takes_over(tmp_path):
    replicas = start_replicas(tmp_path / "replicas", 1)
    config = tmp_path / "velollm.toml"
    # Active checks rarely: the remote replica's death is found by the requests sent to it (passive).
    config.write_text(config_toml([{"name": "local", "kind": "native", "models": ["demo"]},
                                   *replica_backends(replicas, ("r0",))], health_interval_s=30,
                                  health_timeout_s=BUSY_HEALTH_TIMEOUT_S))
    proc, url, log, _ = start_serve(tmp_path, "--config", str(config), *ENGINE_ARGS)
    try:
        served = _burst(url, 12)
        assert set(served) == {"local", "r0"}, served
        page = httpx.get(url + "/metrics").text
        assert metric(page, "velollm_backend_requests_total", backend="local") == served["local"]
        assert metric(page, "velollm_backend_requests_total", backend="r0") == served["r0"]
        assert metric(page, "velollm_backend_in_flight", backend="local") == 0
        assert metric(page, "velollm_backend_request_duration_seconds_count", backend="local") == served["local"]
        native = ollama.Client(host=url, timeout=120)
        assert native.chat(model="demo", messages=USER, options={"num_predict": 2, "temperature": 0}).eval_count == 2
        status = httpx.get(url + "/status/upstream").json()["upstream"]
        assert [b["name"] for b in status["backends"]] == ["local", "r0"]

        replicas[0].kill()
        served = _burst(url, 12)  # none fails
        assert served == {"local": 12}
        page = httpx.get(url + "/metrics").text
        assert metric(page, "velollm_backend_ejected", backend="r0") == 1
        assert metric(page, "velollm_backend_failovers_total", backend="r0") >= 1  # retried here
    finally:
        stop_serve(proc)
        for r in replicas:
            r.stop()
    assert "Traceback" not in log.read_text()


def test_local_first_keeps_the_old_order(tmp_path):
    """`local_first = true`: the native engine answers every request for its names (remote replicas unused)."""
    from tests.serve_process import free_port

    config = tmp_path / "velollm.toml"
    config.write_text(config_toml([{"name": "local", "kind": "native", "models": ["demo"]},
                                   {"name": "r0", "url": f"http://127.0.0.1:{free_port()}", "kind": "velollm",
                                    "models": ["demo"]}], local_first=True, health_interval_s=0))
    proc, url, _, _ = start_serve(tmp_path, "--config", str(config), *ENGINE_ARGS)
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
        for _ in range(3):
            raw = client.chat.completions.with_raw_response.create(model="demo", messages=USER, max_tokens=2,
                                                                 temperature=0)
            assert "x-velollm-backend" not in raw.headers and raw.parse().usage.completion_tokens == 2
        assert metric(httpx.get(url + "/metrics").text, "velollm_backend_requests_total", backend="r0") == 0
    finally:
        stop_serve(proc)
