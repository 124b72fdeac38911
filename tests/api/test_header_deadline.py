"""The header deadline in uvicorn's protocol layer (velollm/api/header_deadline.py), for both HTTP/1.1
implementations uvicorn ships (httptools, which `velollm serve` uses, and h11), through raw sockets against
a real uvicorn in a thread. tests/api/test_connection_guard.py covers it end to end on `velollm serve`."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from tests.serve_process import free_port
from velollm.api.head_limit import MAX_HEADER_BYTES, MAX_TARGET_BYTES
from velollm.api.header_deadline import INVALID_REQUEST, header_deadline_protocol

DEADLINE_S = 0.6
STREAM_S = 2.5  # several deadlines


async def hello(request):
    return PlainTextResponse("hello")


async def slow_stream(request):
    async def ticks():
        t0 = time.monotonic()
        while time.monotonic() - t0 < STREAM_S:
            yield b"tick\n"
            await asyncio.sleep(0.1)
        yield b"end\n"

    return StreamingResponse(ticks(), media_type="text/plain")


APP = Starlette(routes=[Route("/", hello), Route("/stream", slow_stream)])
CLOSED: list[str] = []  # on_close's reasons, as velollm serve counts them on /metrics


@pytest.fixture(scope="module", params=["httptools", "h11"])
def port(request):
    port = free_port()
    config = uvicorn.Config(APP, host="127.0.0.1", port=port, log_level="warning",
                            http=header_deadline_protocol(DEADLINE_S, request.param, on_close=CLOSED.append))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield port
    server.should_exit = True
    thread.join(10)


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def read_response(s: socket.socket) -> bytes:
    """One response with a Content-Length (the hello route's)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"closed before a whole response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = int(next(line.split(b":")[1] for line in lines if line.startswith(b"content-length")))
    while len(body) < length:
        body += s.recv(65536)
    return head + b"\r\n\r\n" + body


def closed_after(s: socket.socket, t0: float) -> float:
    s.settimeout(DEADLINE_S + 5)
    assert s.recv(100) == b""
    return time.monotonic() - t0


GET = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"


def test_a_silent_connection_is_closed_at_the_deadline(port):
    with connect(port) as s:
        assert DEADLINE_S - 0.3 < closed_after(s, time.monotonic()) < DEADLINE_S + 3
    assert CLOSED[-1] == "idle"


def test_half_a_request_line_is_closed_without_an_answer(port):
    with connect(port) as s:
        t0 = time.monotonic()
        s.sendall(b"GET /hel")
        assert DEADLINE_S - 0.3 < closed_after(s, t0) < DEADLINE_S + 3
    assert CLOSED[-1] == "header_timeout"


def test_bytes_do_not_push_the_deadline_back(port):
    with connect(port) as s:
        t0 = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\n")
        s.settimeout(0.05)
        closed = None
        while closed is None and time.monotonic() - t0 < DEADLINE_S + 5:
            try:
                s.sendall(b"x")  # an endless header name, a byte every 50 ms
                if s.recv(100) == b"":
                    closed = time.monotonic() - t0
            except TimeoutError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                closed = time.monotonic() - t0
    assert closed is not None and DEADLINE_S - 0.3 < closed < DEADLINE_S + 3


def test_headers_sent_slowly_within_the_deadline_are_answered(port):
    with connect(port) as s:
        for byte in GET:
            s.sendall(bytes([byte]))
            time.sleep(DEADLINE_S * 0.5 / len(GET))
        assert read_response(s).endswith(b"hello")


def test_the_deadline_restarts_after_each_response(port):
    with connect(port) as s:
        for _ in range(3):  # each request comes more than half a deadline after the previous answer
            time.sleep(DEADLINE_S * 0.6)
            s.sendall(GET)
            assert read_response(s).endswith(b"hello")
        assert closed_after(s, time.monotonic()) < DEADLINE_S + 3  # an idle keep-alive connection
    assert CLOSED[-1] == "idle"


def test_a_stream_longer_than_the_deadline_is_not_cut(port):
    with connect(port) as s:
        s.sendall(b"GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
        t0 = time.monotonic()
        data = b""
        while not data.endswith(b"end\n\r\n0\r\n\r\n"):
            chunk = s.recv(65536)
            assert chunk, f"cut after {time.monotonic() - t0:.1f} s"
            data += chunk
        assert time.monotonic() - t0 > STREAM_S
        s.sendall(GET)  # the connection is still usable
        assert read_response(s).endswith(b"hello")


def test_pipelined_requests_are_all_answered(port):
    with connect(port) as s:
        s.sendall(GET * 3)
        data = b""
        while data.count(b"hello") < 3:
            chunk = s.recv(65536)
            assert chunk, f"closed after {data.count(b'hello')} answers"
            data += chunk
        assert data.count(b"HTTP/1.1 200 OK\r\n") == 3


def test_oversized_headers_are_refused(port, request):
    header = b"X-Big: " + b"a" * 990 + b"\r\n"
    answer = answer_in_pieces(port, b"GET / HTTP/1.1\r\nHost: localhost\r\n" + header * (2 * MAX_HEADER_BYTES // 1000),
                      len(header))  # a header a read, as from a real network
    # both protocols stop at MAX_HEADER_BYTES (h11's own 16 KiB is raised to it): JSON, Ollama's shape at "/"
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ") and b"content-type: application/json" in head, answer[:200]
    assert json.loads(body) == {"error": "the request line and headers are over 64 KiB"}
    assert CLOSED[-1] == "headers_too_large"


@pytest.mark.parametrize("piece", [1 << 20, 16_384])
def test_oversized_headers_that_arrive_whole_are_refused_too(port, piece):
    """A head over MAX_HEADER_BYTES that the server reads whole (one read of up to 256 KiB on loopback, as
    curl or any client sends one) is refused as one in pieces is: the limit is on the head's size, not on
    how the network split it (httptools counted only reads that left the headers unfinished, h11 only an
    unfinished head)."""
    for headers, status in ((b"X-Big: " + b"a" * 70_000 + b"\r\n", 431),
                            (b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 990) for i in range(70)), 431)):
        answer = answer_in_pieces(port, b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\n" + headers + b"\r\n", piece)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert json.loads(body)["error"]["code"] == "headers_too_large"
        assert CLOSED[-1] == "headers_too_large"
    with connect(port) as s:  # served on
        s.sendall(GET)
        assert read_response(s).endswith(b"hello")


def answer_in_pieces(port: int, request: bytes, piece: int) -> bytes:
    """The answer to `request` sent in pieces of `piece` bytes (one read each, as from a real network), read
    to the close."""
    answer = b""
    with connect(port) as s:
        try:
            for i in range(0, len(request), piece):
                s.sendall(request[i:i + piece])
                if piece < len(request):
                    time.sleep(0.001)
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.settimeout(5)
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer


@pytest.mark.parametrize("path, want", [
    (b"/v1/models", {"error": {"message": "the request line is over 64 KiB (its URL is too long)",
                               "type": "invalid_request_error", "param": None, "code": "uri_too_long"}}),
    (b"/api/tags", {"error": "the request line is over 64 KiB (its URL is too long)"}),
])
@pytest.mark.parametrize("size, piece", [(70_000, 1 << 20), (70_000, 1000), (MAX_TARGET_BYTES + 1, 1 << 20),
                                         (1 << 20, 16_384)])
def test_a_request_line_over_64_kib_is_a_json_414_and_the_server_serves_on(port, path, want, size, piece):
    """uvicorn answered a URL over 64 KiB with its plain-text 400 (httptools cannot parse it; h11 stopped at
    16 KiB when it came in pieces, and took it whole in one read): a JSON 414 in the path's wire format, sent
    whole or in pieces, on both protocols."""
    query = b"?q=" + b"a" * (size - len(path) - 3)
    answer = answer_in_pieces(port, b"GET " + path + query + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", piece)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 414 URI Too Long\r\n"), answer[:200]
    assert b"content-type: application/json" in head and b"connection: close" in head.lower()
    assert json.loads(body) == want
    assert CLOSED[-1] == "request_line_too_long"
    with connect(port) as s:  # served on
        s.sendall(GET)
        assert read_response(s).endswith(b"hello")


def test_a_long_request_line_within_the_limits_is_answered(port):
    """Up to MAX_TARGET_BYTES of URL (with a short head) runs, in pieces too (h11 refused 16 KiB)."""
    target = b"/?q=" + b"a" * (MAX_TARGET_BYTES - 4)
    for piece in (1 << 20, 4096):
        with connect(port) as s:
            request = b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\n\r\n"
            for i in range(0, len(request), piece):
                s.sendall(request[i:i + piece])
            assert read_response(s).endswith(b"hello")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def server_log():
    """What the server logs meanwhile: uvicorn's protocol warnings ("uvicorn.error") and asyncio's errors."""
    handler = _Records()
    loggers = [logging.getLogger("uvicorn.error"), logging.getLogger("asyncio")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler.messages
    for logger in loggers:
        logger.removeHandler(handler)


@pytest.mark.parametrize("request_bytes, piece", [
    (b"GET /?q=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 1 << 20),
    (b"GET /?q=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 16_384),
    (b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 1 << 20),
    (b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 16_384),
])
def test_a_refused_head_logs_no_invalid_request(port, server_log, request_bytes, piece):
    """uvicorn logs "Invalid HTTP request received." at each parse error: not for a head answered with a
    JSON 414/431, which is not invalid; and the answer is written once (no error on the transport)."""
    answer = answer_in_pieces(port, request_bytes, piece)
    assert answer.startswith((b"HTTP/1.1 414 ", b"HTTP/1.1 431 ")), answer[:200]
    time.sleep(0.1)
    assert INVALID_REQUEST not in server_log and not any("Fatal error" in m for m in server_log), server_log


def test_a_malformed_request_still_logs_invalid_request(port, server_log):
    with connect(port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost localhost\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400 ")
    time.sleep(0.1)
    assert INVALID_REQUEST in server_log
