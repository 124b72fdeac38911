"""A stream its client abandons as soon as the headers arrive, before any chunk: the proxy closes its upstream
connection at once (it does not wait for a first chunk, keep the connection in the pool, or read on).

llama-cpp-python's server looks for a disconnect only between the chunks it streams (get_event_publisher), and
its first chunk is computed in one thread call that cancellation cannot cut short; with the tiny random GGUF of
these tests that call lasts the whole generation (its streaming holds back text that is not valid UTF-8, and
the model's first bytes never are). So any client that closes later than a millisecond or two after the headers
leaves it generating to max_tokens: a direct client 2 of 10 times closing at once, 4, 6 and 9 of 10 closing 2, 5
and 10 ms later; through the proxy, which closes 3-15 ms after (median; its own client must leave first), 15 of
20. Holding the stream until the first chunk would change nothing there (that chunk is the generation's end)
and would keep every upstream generating for a client that left. What the proxy owes the upstream is an end it
can see as soon as the client has gone. The upstream here is a raw socket, so what it sees is the connection
itself: the headers of a stream, then nothing, then the close.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.serve_process import free_port

STREAM_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
               b"transfer-encoding: chunked\r\n\r\n")
CLOSE_BOUND_S = 3.0  # a loaded 2-core machine takes milliseconds; a connection kept open lasts 120 s (idle timeout)


class HeadersOnlyUpstream:
    """An OpenAI-compatible upstream that lists model `m` and answers every POST with a stream's headers and no
    chunk, then records how long after its headers the connection was closed (None: still open at its bound)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.closed_after: list[float | None] = []
        self.streams = threading.Semaphore(0)
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # the proxy may reuse a connection for a listing, then for the stream
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"POST"):
                    body = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                                 % len(body) + body)
                    continue
                length = next(int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                              if line.startswith(b"content-length:"))
                await reader.readexactly(length)
                writer.write(STREAM_HEAD)
                await writer.drain()
                sent = time.monotonic()
                self.streams.release()
                try:  # the proxy sends nothing more on this connection: the read ends when it closes
                    await asyncio.wait_for(reader.read(), CLOSE_BOUND_S)
                    self.closed_after.append(time.monotonic() - sent)
                except asyncio.TimeoutError:
                    self.closed_after.append(None)
                return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


@pytest.fixture
def upstream() -> Iterator[HeadersOnlyUpstream]:
    server = HeadersOnlyUpstream()
    yield server
    server.stop()


STREAMS = {
    "openai": ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                        "stream": True}),
    "ollama": ("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
}


@pytest.mark.parametrize("api", STREAMS)
def test_a_stream_left_at_its_headers_closes_the_upstream_connection(upstream, start_proxy, api):
    """Each try: the client opens the stream, leaves when the headers arrive, and the upstream sees its
    connection end well within CLOSE_BOUND_S (a pooled or held connection stays open)."""
    proxy = start_proxy(upstream.url, kind="openai")
    path, body = STREAMS[api]
    tries = 3
    for _ in range(tries):
        with httpx.Client(timeout=10) as client, client.stream("POST", proxy.url + path, json=body) as response:
            assert response.status_code == 200
        assert upstream.streams.acquire(timeout=10), "the stream never reached the upstream"
    deadline = time.monotonic() + CLOSE_BOUND_S + 5
    while len(upstream.closed_after) < tries and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(upstream.closed_after) == tries
    assert None not in upstream.closed_after, f"the upstream connection stayed open: {upstream.closed_after}"
