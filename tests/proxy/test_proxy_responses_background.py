"""Background responses through a proxy: on an upstream's chat route (this process runs and stores them, and
cancels them by closing the upstream stream), and on an upstream's own Responses API (created, looked up and
cancelled there)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest
from proxy_servers import ThreadServer, velollm_server

ASK = {"model": "demo", "input": "go on", "temperature": 0, "max_output_tokens": 200,
       "extra_body": {"ignore_eos": True}}


@pytest.fixture
def upstream() -> Iterator[tuple[ThreadServer, object]]:
    from tests.api.stub_engine import StubEngine

    engine = StubEngine(token_delay_s=0.005)  # a second for the answer
    server = velollm_server(engine)
    yield server, engine
    server.stop()


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=30)


def _until(client: openai.OpenAI, response_id: str, done, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not done(response := client.responses.retrieve(response_id)):
        assert time.monotonic() < deadline, response.status
        time.sleep(0.02)
    return response


def _blocks_freed(engine, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while engine.stats().num_allocated_blocks and time.monotonic() < deadline:
        time.sleep(0.02)
    return engine.stats().num_allocated_blocks == 0


def test_on_an_upstreams_chat_route_the_proxy_runs_and_cancels_them(upstream, start_proxy):
    server, engine = upstream
    front = _client(start_proxy(server.url).url)
    created = front.responses.create(**ASK, background=True)
    assert created.status == "queued" and created.background
    done = _until(front, created.id, lambda r: r.status not in ("queued", "in_progress"))
    assert done.status == "incomplete" and len(done.output_text) == 200
    with pytest.raises(openai.NotFoundError):  # kept here: the upstream answered a chat
        _client(server.url).responses.retrieve(created.id)
    running = front.responses.create(**ASK, background=True)
    _until(front, running.id, lambda r: len(r.output_text) >= 5)
    cancelled = front.responses.cancel(running.id)
    assert cancelled.status == "cancelled" and 5 <= len(cancelled.output_text) < 200
    assert _blocks_freed(engine)  # the upstream stream closed: its engine request aborted


def test_on_an_upstreams_own_responses_api_cancel_goes_there(upstream, start_proxy):
    server, engine = upstream
    front = _client(start_proxy(server.url, kind="openai").url)
    created = front.responses.create(**ASK, background=True)
    assert created.status == "queued"
    _until(front, created.id, lambda r: len(r.output_text) >= 5)  # looked up there
    assert front.responses.cancel(created.id).status == "cancelled"
    assert _client(server.url).responses.retrieve(created.id).status == "cancelled"
    assert _blocks_freed(engine)


def test_an_upstreams_background_stream_is_followed_through_the_proxy_as_it_comes(upstream, start_proxy):
    """GET ?stream=true of a response an upstream's Responses API runs: its events relayed as they come (they were
    held until the response ended), resumable after a sequence number."""
    server, _ = upstream
    front = _client(start_proxy(server.url, kind="openai").url)
    created = front.responses.create(**ASK, background=True)
    events = front.responses.retrieve(created.id, stream=True, starting_after=2)
    first = next(iter(events))
    assert first.sequence_number == 3
    assert _client(server.url).responses.retrieve(created.id).status == "in_progress"  # not held until the end
    rest = list(events)
    assert rest[-1].type == "response.incomplete" and rest[0].sequence_number == 4
