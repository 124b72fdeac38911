"""`velollm serve --async-scheduling` through the openai SDK: concurrent streams (one cut short by the client,
one ended by a stop string) give what the synchronous server gives, and every KV block comes back."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from tests.api.conftest import ServerHandle, start_live, stop_live
from tests.greedy_agreement import assert_greedy_agrees


@pytest.fixture(scope="module")
def async_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("async_live")
    proc, url, log = start_live(tmp, "--max-model-len", "512", "--max-request-bytes", "1MiB", "--async-scheduling")
    try:
        yield ServerHandle("live", url, max_model_len=512, log=log)
    finally:
        stop_live(proc)
    assert proc.returncode in (0, -15), log.read_text()[-3000:]


def _client(server: ServerHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def _request(i: int) -> dict:
    return dict(model="demo", messages=[{"role": "user", "content": f"count to {i} please"}], max_tokens=16 + 4 * i,
                temperature=0, extra_body={"ignore_eos": True})


def _stream(server: ServerHandle, i: int) -> tuple[str, str | None, list]:
    chunks = list(_client(server).chat.completions.create(**_request(i), stream=True, logprobs=True, top_logprobs=2))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    entries = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content or []]
    return text, finishes[-1] if finishes else None, entries


def _as_greedy(entries: list) -> tuple[list[str], list[dict[str, float]]]:
    """OpenAI chat logprobs as tests/greedy_agreement.py reads them: the tokens, and per step token -> logprob."""
    return [e.token for e in entries], [{t.token: t.logprob for t in [*e.top_logprobs, e]} for e in entries]


def test_concurrent_streams_equal_the_sync_server(async_server, live_server):
    assert "async scheduling" in async_server.log.read_text()
    assert "async scheduling" not in live_server.log.read_text()
    with ThreadPoolExecutor(6) as pool:
        streamed = list(pool.map(lambda i: _stream(async_server, i), range(6)))
    for i, (text, finish, entries) in enumerate(streamed):
        whole = _client(live_server).chat.completions.create(**_request(i), logprobs=True, top_logprobs=2)
        assert finish == whole.choices[0].finish_reason == "length"
        # batched against alone: equal up to a near tie (tests/greedy_agreement.py), and then the whole text
        agreed = assert_greedy_agrees(*_as_greedy(entries), *_as_greedy(whole.choices[0].logprobs.content))
        if agreed == len(entries):
            assert text == whole.choices[0].message.content
    _assert_blocks_return(async_server)


def test_stop_string_and_client_disconnect(async_server, live_server):
    client = _client(async_server)
    free = _client(live_server).chat.completions.create(**_request(3)).choices[0].message.content
    stop = free[5:8]
    r = client.chat.completions.create(**_request(3), stop=[stop])
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content == free[: free.index(stop)]
    stream = client.chat.completions.create(**{**_request(5), "max_tokens": 400}, stream=True)
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()  # the server aborts the request, whose row may be in the step in flight
    _assert_blocks_return(async_server)


def _assert_blocks_return(server: ServerHandle) -> None:
    assert ("velollm_allocated_blocks", frozenset({"model": "demo"}.items())) in server.metrics()
    assert server.wait_metric("velollm_allocated_blocks", lambda v: v == 0, model="demo") == 0


def test_engine_info_says_whether_async_scheduling_is_on(async_server, live_server):
    import httpx

    def info(server: ServerHandle) -> str:
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
        return next(line for line in text.splitlines() if line.startswith("velollm_engine_info{"))

    assert 'async_scheduling="true"' in info(async_server)
    assert 'async_scheduling="false"' in info(live_server)
