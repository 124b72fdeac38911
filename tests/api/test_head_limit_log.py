"""A real `velollm serve` (proxy-only: no engine needed) answers a request line or head over 64 KiB with its JSON
414/431 and logs no "Invalid HTTP request received." for it (uvicorn logged that warning at the parse error
before each of them, and httptools' refusals wrote their answer twice, the second after write_eof: asyncio's
"Fatal error on transport" with a traceback), while a request that is malformed otherwise still gets uvicorn's 400
and the warning."""

from __future__ import annotations

import json
import time

import pytest

from tests.api.test_header_deadline import answer_in_pieces
from tests.serve_process import free_port, start_serve, stop_serve
from velollm.api.header_deadline import INVALID_REQUEST

BIG = 70_000  # over the 64 KiB limits


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("serve")
    # an upstream nobody listens on: the refusals happen in the protocol layer, before any route runs
    proc, url, log, _ = start_serve(tmp_path, "--proxy-only", "--upstream", f"http://127.0.0.1:{free_port()}")
    try:
        yield int(url.rsplit(":", 1)[1]), log
    finally:
        stop_serve(proc)


def _warnings_after(log, request: bytes, port: int) -> tuple[bytes, str]:
    """The answer to `request`, and what the server logged from its sending to a moment after the answer."""
    before = len(log.read_text())
    answer = answer_in_pieces(port, request, 16_384)
    time.sleep(0.3)  # the server logs before it answers; a margin for the file write
    return answer, log.read_text()[before:]


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /v1/models?q=" + b"a" * BIG + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414),
    (b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * BIG + b"\r\n\r\n", 431),
    (b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 990) for i in range(70))
     + b"\r\n", 431),
])
def test_a_refused_head_is_answered_without_the_invalid_request_warning(serve, request_bytes, status):
    port, log = serve
    answer, logged = _warnings_after(log, request_bytes, port)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    assert "error" in json.loads(body)
    assert INVALID_REQUEST not in logged, logged
    assert "Traceback" not in logged and "ERROR" not in logged, logged  # the answer was written once


def test_a_malformed_request_is_still_logged(serve):
    port, log = serve
    answer, logged = _warnings_after(log, b"GET / HTTP/1.1\r\nHost localhost\r\n\r\n", port)  # no colon
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert INVALID_REQUEST in logged, logged
