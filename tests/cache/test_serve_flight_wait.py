"""Requests waiting for one in flight (`velollm serve --semantic-cache --cache-flight-wait 3s`, demo model),
through the official openai client: a wait is bounded, ends when its client closes the connection, and
ends as soon as the request it waits for fails or loses its own client; no wait and no flight is left.

The leader is a long generation (thousands of tokens, many seconds on any CPU) that the test cuts short
by closing its connection, so the waits below never depend on how fast the demo model runs.
"""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from tests.api.conftest import ServerHandle
from tests.serve_process import start_serve, stop_serve

pytestmark = pytest.mark.slow

FLIGHT_WAIT_S = 3.0
LONG = 8000  # tokens: over 10 s of the demo model, far longer than FLIGHT_WAIT_S
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flight-wait")
    proc, url, log, _ = start_serve(tmp, "--semantic-cache", "--cache-flight-wait", f"{FLIGHT_WAIT_S:g}s",
                                    "--max-model-len", "8192", "--kv-cache-memory", "64MiB")
    try:
        yield ServerHandle("live", url, log=log)
    finally:
        stop_serve(proc)


def _body(question: str, stream: bool, max_tokens: int = LONG) -> dict:
    return {"model": "demo", "messages": [{"role": "system", "content": "Flight wait."},
                                          {"role": "user", "content": question}],
            "max_tokens": max_tokens, "temperature": 0, "stream": stream, "extra_body": {"ignore_eos": True}}


class Waits:
    """The server's flight metrics, read off the event loop."""

    def __init__(self, server: ServerHandle) -> None:
        self.server = server
        self.start = {o: server.metric("velollm_cache_flight_waits_total", outcome=o)
                      for o in ("released", "timeout", "cancelled")}

    def added(self, outcome: str) -> float:
        return self.server.metric("velollm_cache_flight_waits_total", outcome=outcome) - self.start[outcome]

    async def until(self, name: str, predicate, timeout: float = 10.0, **labels: str) -> float:
        value = await asyncio.to_thread(self.server.wait_metric, name, predicate, timeout, **labels)
        assert predicate(value), f"{name}{labels} = {value}"
        return value


class Stream:
    """A streamed request held open through the openai SDK: its lines read one at a time (one iterator: an
    abandoned one would close the connection when collected), closed when the test says."""

    def __init__(self, context, response, waited_s: float) -> None:
        self.context, self.response, self.waited_s = context, response, waited_s
        self.lines = response.iter_lines()

    @classmethod
    async def open(cls, aclient: openai.AsyncOpenAI, body: dict) -> "Stream":
        t0 = time.perf_counter()
        context = aclient.chat.completions.with_streaming_response.create(**body)
        response = await context.__aenter__()
        return cls(context, response, time.perf_counter() - t0)

    @property
    def label(self) -> str:
        return self.response.headers["x-velollm-cache"]

    async def chunk(self) -> str:
        async for line in self.lines:
            if line.startswith("data:"):
                return line
        raise AssertionError("the stream ended")

    async def close(self) -> None:
        await self.context.__aexit__(None, None, None)


def _client(server: ServerHandle) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)


def _leaks_none(server: ServerHandle) -> None:
    assert server.wait_metric("velollm_cache_flights", lambda v: v == 0) == 0
    assert server.metric("velollm_cache_flight_waiters") == 0


@pytest.mark.parametrize("question", ["Tell the story of the tides.", "Recount the tale of the tides."])
def test_a_follower_whose_client_leaves_stops_waiting_and_the_leader_goes_on(server, question):
    """Identical (the same question) and paraphrase (the semantic follow) waits alike."""
    tag = "identical" if question.startswith("Tell") else "paraphrase"
    requests_499 = server.metric("velollm_requests_total", model="demo", endpoint=CHAT, status="499")
    waits = Waits(server)

    async def run() -> None:
        async with _client(server) as aclient:
            leader = await Stream.open(aclient, _body(f"Tell the story of the tides ({tag}).", True))
            assert leader.label == "miss"
            await leader.chunk()
            follower = asyncio.create_task(aclient.chat.completions.create(
                **_body(question.replace(".", f" ({tag})."), False)))
            await waits.until("velollm_cache_flight_waiters", lambda v: v == 1)
            follower.cancel()  # the SDK's connection closes under the waiting request
            await asyncio.gather(follower, return_exceptions=True)
            await waits.until("velollm_cache_flight_waiters", lambda v: v == 0, timeout=FLIGHT_WAIT_S - 1)
            assert await asyncio.to_thread(waits.added, "cancelled") == 1
            assert await asyncio.to_thread(waits.added, "timeout") == 0
            assert server.metric("velollm_cache_flights") == 1  # the leader's, still generating
            assert server.metric("velollm_requests_total", model="demo", endpoint=CHAT,
                                 status="499") == requests_499 + 1  # the follower, gone
            assert (await leader.chunk()).startswith("data:")  # and still streaming to its client
            await leader.close()

    asyncio.run(run())
    _leaks_none(server)


def test_a_wait_is_bounded_then_the_follower_generates_its_own_answer(server):
    waits = Waits(server)

    async def run() -> None:
        async with _client(server) as aclient:
            leader = await Stream.open(aclient, _body("Describe every wave of a storm.", True))
            await leader.chunk()
            follower = await Stream.open(aclient, _body("Describe every wave of a storm.", True))
            # Headers come when the follower's own generation starts: after the wait, long before the
            # leader's 8000 tokens.
            assert follower.label == "miss" and follower.waited_s >= FLIGHT_WAIT_S - 0.1
            assert await asyncio.to_thread(waits.added, "timeout") == 1
            assert (await follower.chunk()).startswith("data:")
            assert (await leader.chunk()).startswith("data:")
            assert server.metric("velollm_cache_flights") == 2  # both generating; the follower holds no key
            await follower.close()
            await leader.close()

    asyncio.run(run())
    assert waits.added("released") == 0 and waits.added("cancelled") == 0
    _leaks_none(server)


@pytest.mark.parametrize("leader_stream", [True, False])
def test_a_leader_whose_client_leaves_releases_its_follower_at_once(server, leader_stream):
    waits = Waits(server)
    question = f"List the stars of the night sky ({'streamed' if leader_stream else 'whole'})."
    generated = server.metric("velollm_tokens_total", model="demo", kind="generation")

    async def run() -> None:
        async with _client(server) as aclient:
            if leader_stream:
                leader = await Stream.open(aclient, _body(question, True))
                await leader.chunk()
            else:
                leader = asyncio.create_task(aclient.chat.completions.create(**_body(question, False)))
                await waits.until("velollm_cache_flights", lambda v: v == 1)
            opening = asyncio.create_task(Stream.open(aclient, _body(question, True)))
            await waits.until("velollm_cache_flight_waiters", lambda v: v == 1)
            left = time.perf_counter()
            if leader_stream:
                await leader.close()
            else:
                leader.cancel()
                await asyncio.gather(leader, return_exceptions=True)
            follower = await opening
            released_after = time.perf_counter() - left
            # The follower generates its own answer (the leader stored nothing), without waiting out its time.
            assert follower.label == "miss" and released_after < FLIGHT_WAIT_S - 0.5
            assert await asyncio.to_thread(waits.added, "released") == 1
            assert (await follower.chunk()).startswith("data:")
            await follower.close()

    asyncio.run(run())
    assert waits.added("timeout") == 0 and waits.added("cancelled") == 0
    _leaks_none(server)
    # Both generations were cut short when their clients left: neither ran its 8000 tokens.
    tokens = server.wait_metric("velollm_tokens_total", lambda v: v > generated, model="demo", kind="generation")
    assert tokens - generated < LONG


def test_a_leader_whose_upstream_fails_mid_stream_releases_its_follower(tmp_path):
    """A proxied model: the upstream (a second `velollm serve`) dies while the leader streams. The leader's
    stream ends in error and stores nothing; the identical request waiting for it is released at once and
    asks the upstream itself (gone: an error, not a wait of 30 s)."""
    (tmp_path / "up").mkdir()
    (tmp_path / "front").mkdir()
    up_proc, up_url, _, _ = start_serve(tmp_path / "up", "--max-model-len", "8192", "--kv-cache-memory", "64MiB")
    procs = [up_proc]
    try:
        proc, url, log, _ = start_serve(tmp_path / "front", "--proxy-only", "--upstream", up_url, "--cache",
                                        "--cache-flight-wait", "30s")
        procs.append(proc)
        front = ServerHandle("live", url, log=log)
        waits = Waits(front)

        async def run() -> tuple:
            async with _client(front) as aclient:
                leader = await Stream.open(aclient, _body("Name every river of Europe.", True))
                assert leader.label == "miss"
                await leader.chunk()
                follower = asyncio.create_task(aclient.chat.completions.with_raw_response.create(
                    **_body("Name every river of Europe.", False)))
                await waits.until("velollm_cache_flight_waiters", lambda v: v == 1)
                killed = time.perf_counter()
                up_proc.kill()
                tail = [line async for line in leader.lines]
                await leader.close()
                answer = await asyncio.gather(follower, return_exceptions=True)
                return tail, answer[0], time.perf_counter() - killed

        tail, answer, after_s = asyncio.run(run())
        assert any('"error"' in line for line in tail), tail[-3:]  # in-band, after the 200
        assert isinstance(answer, openai.APIStatusError) and answer.status_code >= 500, answer
        assert answer.response.headers["x-velollm-cache"] == "miss" and after_s < 10
        assert waits.added("released") == 1 and waits.added("timeout") == 0
        assert front.metric("velollm_cache_entries") == 0  # the broken answer was not stored
        _leaks_none(front)
    finally:
        for proc in procs:
            stop_serve(proc)
