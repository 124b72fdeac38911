"""Proxied models through the cache: two `velollm serve --proxy-only` replicas in front of a real
upstream (a `velollm serve` on the demo model) share their exact tier in a real redis-server."""

from __future__ import annotations

import time

import httpx
import ollama
import openai
import pytest

from tests.api.conftest import ServerHandle
from tests.cache.redis_server import redis_server
from tests.serve_process import start_serve, stop_serve

pytestmark = pytest.mark.slow


def upstream_requests(upstream: ServerHandle) -> float:
    """Generation requests the upstream answered (the proxy may convert /v1 to /api)."""
    return sum(v for (name, labels), v in upstream.metrics().items()
               if name == "velollm_requests_total" and dict(labels).get("endpoint") in
               ("/v1/chat/completions", "/api/chat", "/v1/completions", "/api/generate"))


def wait_stored(redis_url: str, n: int) -> None:
    """Answers are stored once their response ended, in the background."""
    import redis

    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 30
    while client.zcard("velollm:cache-lru") < n:
        assert time.monotonic() < deadline, "the answer was never stored"
        time.sleep(0.02)
    client.close()


def test_proxied_answers_are_cached_and_shared_between_replicas(tmp_path):
    for name in ("up", "a", "b"):
        (tmp_path / name).mkdir()
    with redis_server(tmp_path) as redis_url:
        up_proc, up_url, _, _ = start_serve(tmp_path / "up", "--max-model-len", "256", "--kv-cache-memory", "32MiB")
        procs = [up_proc]
        try:
            replicas = []
            for name in ("a", "b"):
                proc, url, _, _ = start_serve(tmp_path / name, "--proxy-only", "--upstream", up_url,
                                              "--cache-url", redis_url)
                procs.append(proc)
                replicas.append(url)
            upstream = ServerHandle("live", up_url)
            a, b = (openai.OpenAI(base_url=f"{u}/v1", api_key="x", max_retries=0) for u in replicas)
            messages = [{"role": "user", "content": "Tell me about rivers."}]
            before = upstream_requests(upstream)
            first = a.chat.completions.with_raw_response.create(model="demo", messages=messages, max_tokens=6,
                                                                temperature=0)
            assert first.headers["x-velollm-cache"] == "miss"
            wait_stored(redis_url, 1)
            hit = b.chat.completions.with_raw_response.create(model="demo", messages=messages, max_tokens=6,
                                                              temperature=0)
            assert hit.headers["x-velollm-cache"] == "hit-exact"
            assert hit.parse().choices[0].message.content == first.parse().choices[0].message.content
            assert upstream_requests(upstream) == before + 1  # replica b never asked the upstream
            time.sleep(1.1)
            b.chat.completions.create(model="demo", messages=messages, max_tokens=6, temperature=0)
            assert ServerHandle("live", replicas[1]).metric("velollm_cache_entries") == 1  # Redis's count
            other_key = openai.OpenAI(base_url=f"{replicas[1]}/v1", api_key="someone-else", max_retries=0)
            assert other_key.chat.completions.with_raw_response.create(
                model="demo", messages=messages, max_tokens=6, temperature=0).headers["x-velollm-cache"] == "miss"

            ol_a, ol_b = (ollama.Client(host=u, timeout=60) for u in replicas)
            options = {"temperature": 0, "num_predict": 5}
            streamed = "".join(p.response for p in ol_a.generate(model="demo", prompt="Rivers are", options=options,
                                                                 stream=True))
            wait_stored(redis_url, 2)
            r = httpx.post(f"{replicas[1]}/api/generate", json={"model": "demo", "prompt": "Rivers are",
                                                                "options": options, "stream": False})
            assert r.headers["x-velollm-cache"] == "hit-exact" and r.json()["response"] == streamed
            assert ol_b.generate(model="demo", prompt="Rivers are", options=options).response == streamed
        finally:
            for proc in procs:
                stop_serve(proc)
