"""Concurrency, client disconnects and /metrics against a live server (stub engine, and the real one)."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai

ENGINE_METRICS = ["velollm_queue_size", "velollm_running_requests", "velollm_active_batches",
                  "velollm_kv_cache_usage_ratio", "velollm_allocated_blocks", "velollm_tokens_per_second"]
ENGINE_COUNTERS = ["velollm_prefix_cache_queries_total", "velollm_prefix_cache_hits_total",
                   "velollm_aborted_requests_total"]
HISTOGRAMS = ["velollm_request_duration_seconds", "velollm_time_to_first_token_seconds",
              "velollm_time_per_output_token_seconds"]


def _prompts(n: int) -> list[str]:
    return [f"request number {i}: tell me about {i * 7 % 13} things" for i in range(n)]


async def _stream_text(client: openai.AsyncOpenAI, prompt: str, max_tokens: int) -> str:
    stream = await client.completions.create(model="demo", prompt=prompt, max_tokens=max_tokens, temperature=0,
                                             stream=True, extra_body={"ignore_eos": True})
    return "".join([c.choices[0].text async for c in stream if c.choices])


def test_32_concurrent_streams_equal_sequential_and_free_blocks(server):
    prompts = _prompts(32)

    async def run() -> tuple[list[str], list[str]]:
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)
        concurrent = await asyncio.gather(*[_stream_text(client, p, 16) for p in prompts])
        sequential = [await _stream_text(client, p, 16) for p in prompts]
        await client.close()
        return concurrent, sequential

    concurrent, sequential = asyncio.run(run())
    assert all(concurrent)
    assert concurrent == sequential
    assert server.wait_metric("velollm_allocated_blocks", lambda v: v == 0, model="demo") == 0


def test_disconnect_after_first_chunk_aborts_and_frees(server):
    aborted = server.metric("velollm_aborted_requests_total", model="demo")
    body = {"model": "demo", "messages": [{"role": "user", "content": "go on forever"}], "max_tokens": 200,
            "temperature": 0, "ignore_eos": True, "stream": True}
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            first = next(response.iter_lines())
            assert first.startswith("data: ") and json.loads(first[6:])["object"] == "chat.completion.chunk"
    # leaving the block closed the connection mid-stream
    now = server.wait_metric("velollm_aborted_requests_total", lambda v: v >= aborted + 1, model="demo")
    assert now == aborted + 1
    assert server.wait_metric("velollm_allocated_blocks", lambda v: v == 0, model="demo") == 0


def test_non_streaming_disconnect_aborts(server):
    aborted = server.metric("velollm_aborted_requests_total", model="demo")
    body = {"model": "demo", "prompt": "slow", "max_tokens": 200, "temperature": 0, "ignore_eos": True}
    try:
        httpx.post(f"{server.url}/v1/completions", json=body, timeout=0.05)
    except httpx.TimeoutException:
        pass
    now = server.wait_metric("velollm_aborted_requests_total", lambda v: v >= aborted + 1, model="demo")
    assert now == aborted + 1
    assert server.wait_metric("velollm_allocated_blocks", lambda v: v == 0, model="demo") == 0


def test_metrics_exposed_and_moving(server):
    before = server.metrics()
    labels = dict(model="demo", endpoint="/v1/chat/completions", status="200")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "metrics"}], max_tokens=5,
                                   temperature=0, extra_body={"ignore_eos": True})
    after = server.metrics()
    names = {name for name, _ in after}
    for name in ENGINE_METRICS + ENGINE_COUNTERS + ["velollm_requests_total", "velollm_tokens_total"]:
        assert name in names, name
    for name in HISTOGRAMS:
        assert f"{name}_count" in names, name

    def delta(name: str, **lbl: str) -> float:
        key = (name, frozenset(lbl.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("velollm_requests_total", **labels) == 1
    assert delta("velollm_tokens_total", model="demo", kind="generation") >= 5
    assert delta("velollm_tokens_total", model="demo", kind="prompt") > 0
    assert delta("velollm_time_to_first_token_seconds_count", model="demo") == 1
    assert delta("velollm_time_per_output_token_seconds_count", model="demo") == 1
    assert delta("velollm_request_duration_seconds_count", model="demo", endpoint="/v1/chat/completions") == 1
    queries = delta("velollm_prefix_cache_queries_total", model="demo")
    assert queries == 0 if server.kind == "stub" else queries > 0  # the stub engine has no prefix cache
