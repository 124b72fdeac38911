"""Failover with real replicas: one `velollm serve` is killed in the middle of a run. No non-streamed
request fails (those on it are retried on the other replica before their first byte), its streams end
with an error event, it is ejected within 2 s, and re-admitted once it is back."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from tests.gc_paused import gc_paused
from tests.proxy.proxy_servers import ThreadServer
from tests.router.replicas import config_toml, metric, replica_backends, router_app, start_replicas

USER = [{"role": "user", "content": "tell me a long story"}]


def _in_flight(url: str, backend: str) -> float:
    return metric(httpx.get(url + "/metrics").text, "velollm_backend_in_flight", backend=backend) or 0.0


def _ejected(url: str, backend: str) -> float | None:
    return metric(httpx.get(url + "/metrics").text, "velollm_backend_ejected", backend=backend)


@pytest.mark.timeout(600)
def test_kill_a_replica_mid_run(tmp_path):
    replicas = start_replicas(tmp_path / "replicas", 2)
    toml = config_toml(replica_backends(replicas), health_interval_s=0.5, health_timeout_s=0.5)
    server = ThreadServer(router_app(toml, tmp_path)).start()
    try:
        asyncio.run(_run(server.url, replicas))
    finally:
        server.stop()
        for r in replicas:
            r.stop()


async def _run(url: str, replicas) -> None:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)

    killed = asyncio.Event()
    started_on: list[str] = []  # the backend of each stream, once its headers arrived

    async def wholes_until_kill(i: int) -> list[str]:
        """Non-streamed requests back to back until the kill, and one more: some are on a when it dies."""
        reasons = []
        while True:
            done = killed.is_set()
            answer = await client.chat.completions.create(model="demo", messages=USER, max_tokens=48, seed=i,
                                                          extra_body={"ignore_eos": True})
            assert answer.usage.completion_tokens == 48
            reasons.append(answer.choices[0].finish_reason)
            if done:
                return reasons

    async def stream() -> tuple[str, list[dict]]:
        events: list[dict] = []
        async with httpx.AsyncClient(timeout=120) as http:
            async with http.stream("POST", url + "/v1/chat/completions",
                                   json={"model": "demo", "messages": USER, "max_tokens": 400, "stream": True,
                                         "ignore_eos": True}) as r:
                backend = r.headers["x-velollm-backend"]
                started_on.append(backend)
                async for line in r.aiter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        events.append(json.loads(line[6:]))
        return backend, events

    streams = [asyncio.create_task(stream()) for _ in range(4)]
    wholes = [asyncio.create_task(wholes_until_kill(i)) for i in range(6)]
    # Kill a while it runs a stream and, besides its streams, at least one non-streamed request.
    deadline = time.monotonic() + 60
    while not (started_on.count("a") >= 1 and _in_flight(url, "a") > started_on.count("a")):
        assert time.monotonic() < deadline, "the load never reached replica a"
        await asyncio.sleep(0.05)
    # the router runs in this process: a full collection of the session's heap would stop it too, not its doing
    with gc_paused():
        killed_at = time.monotonic()
        replicas[0].kill()
        killed.set()
        while _ejected(url, "a") != 1:
            assert time.monotonic() - killed_at < 2.0, "replica a was not ejected within 2 s"
            await asyncio.sleep(0.05)
    for reasons in await asyncio.gather(*wholes):  # none failed
        assert set(reasons) == {"length"}
    page = httpx.get(url + "/metrics").text
    assert metric(page, "velollm_backend_failovers_total", backend="a") >= 1  # some were retried on b
    broken = 0
    for backend, events in await asyncio.gather(*streams):
        if backend == "a":
            assert "error" in events[-1] and events[-1]["error"]["message"]
            broken += 1
        else:
            assert events[-1]["choices"][0]["finish_reason"] == "length"
    assert broken >= 1
    # new requests go to b only; then a comes back and is re-admitted
    answer = await client.chat.completions.with_raw_response.create(model="demo", messages=USER, max_tokens=2)
    assert answer.headers["x-velollm-backend"] == "b"
    replicas[0].start().wait_healthy()
    deadline = time.monotonic() + 5
    while _ejected(url, "a") != 0:
        assert time.monotonic() < deadline, "replica a was not re-admitted"
        await asyncio.sleep(0.1)
    seen = set()
    for _ in range(4):
        raw = await client.chat.completions.with_raw_response.create(model="demo", messages=USER, max_tokens=2)
        seen.add(raw.headers["x-velollm-backend"])
    assert seen == {"a", "b"}
