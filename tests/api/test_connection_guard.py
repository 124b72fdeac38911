"""Connection-level abuse against a real `velollm serve` on the demo model: a low inherited open-files
limit (the server raises it), and a thousand slow or idle sockets (the header deadline closes them while
real clients keep being answered)."""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import threading
import time

import httpx
import openai
import pytest

from tests.serve_process import start_serve, stop_serve

LOW_SOFT_LIMIT = 256
NUM_STREAMS = 600
HEADER_TIMEOUT_S = 3.0
NUM_SLOW = 500  # half a request line, then nothing
NUM_IDLE = 500  # nothing at all
STREAM_TOKENS = 6000  # about 10 s on 2 CPU cores: a stream much longer than the header deadline


def _room_for(num_sockets: int) -> None:
    """This test process holds the client ends: raise its own soft limit (as the server does), or skip."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = num_sockets + 200
    if soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"hard open-files limit {hard} < {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _lower_soft_limit() -> None:  # in the child, before exec: what a systemd service or desktop shell hands down
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_SOFT_LIMIT, hard))


def test_serve_raises_a_low_soft_limit_and_holds_600_streams(tmp_path):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < NUM_STREAMS + 200:
        pytest.skip(f"hard open-files limit {hard}: the server could not hold {NUM_STREAMS} connections")
    _room_for(NUM_STREAMS)
    proc, url, log, _ = start_serve(tmp_path, "--model", "demo", "--no-upstream", "--max-model-len", "128",
                                    "--kv-cache-memory", "32MiB", "--max-queue", str(NUM_STREAMS),
                                    preexec_fn=_lower_soft_limit)
    try:
        assert f"open-files limit raised from {LOW_SOFT_LIMIT} to " in log.read_text()
        answered, health = asyncio.run(_hold_streams(url))
    finally:
        stop_serve(proc)
    assert answered == NUM_STREAMS
    assert health and set(health) == {200}
    assert "Too many open files" not in log.read_text()


async def _hold_streams(url: str) -> tuple[int, list[int | str]]:
    """NUM_STREAMS concurrent /api/generate streams, each keeping its connection until every one has its whole
    answer: with the inherited 256 the server could accept only about 240 of them, and the rest would wait
    in the backlog forever."""
    all_answered = asyncio.Event()
    answered = 0
    limits = httpx.Limits(max_connections=NUM_STREAMS, max_keepalive_connections=NUM_STREAMS)
    body = {"model": "demo", "prompt": "hello", "options": {"num_predict": 2, "temperature": 0}}

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal answered
        async with client.stream("POST", f"{url}/api/generate", json=body) as response:
            assert response.status_code == 200
            lines = [json.loads(line) async for line in response.aiter_lines() if line]
            assert lines[-1]["done"] is True
            answered += 1
            if answered == NUM_STREAMS:
                all_answered.set()
            await all_answered.wait()  # the connection stays held, not returned to the pool

    done = threading.Event()
    codes: list[int | str] = []

    def health_checks() -> None:
        """From a thread of its own: on the streams' loop, the probe would wait for that loop (busy for
        seconds with 600 streams on a loaded box) and time out for the client's sake, not the server's."""
        with httpx.Client(timeout=5) as probe:
            while not done.is_set():
                try:
                    codes.append(probe.get(f"{url}/health").status_code)
                except httpx.HTTPError as exc:  # kept: the assertion names it
                    codes.append(repr(exc))
                done.wait(0.2)

    checks = threading.Thread(target=health_checks, daemon=True)
    checks.start()
    try:
        async with httpx.AsyncClient(limits=limits, timeout=120) as client:
            try:
                await asyncio.wait_for(asyncio.gather(*(one(client) for _ in range(NUM_STREAMS))), 240)
            except asyncio.TimeoutError:
                pass
            all_answered.set()
    finally:
        done.set()
        checks.join(10)
    return answered, codes


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, url, _, _ = start_serve(tmp_path_factory.mktemp("connguard"), "--model", "demo", "--no-upstream",
                                    "--max-model-len", "8192", "--kv-cache-memory", "64MiB",
                                    "--header-timeout", str(HEADER_TIMEOUT_S), "--body-timeout", str(HEADER_TIMEOUT_S))
    try:
        yield url
    finally:
        stop_serve(proc)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def test_slow_and_idle_sockets_are_closed_while_real_clients_are_answered(server):
    _room_for(NUM_SLOW + NUM_IDLE)
    port = _port(server)
    closed_before = _closed(server)
    opened = time.monotonic()
    slow = [_connect(port) for _ in range(NUM_SLOW)]
    for s in slow:
        s.sendall(b"POST /v1/chat/completions HTT")
    idle = [_connect(port) for _ in range(NUM_IDLE)]
    try:
        client = openai.OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0, timeout=10)
        while True:  # meanwhile, real requests on new connections, answered while the bad sockets are still open
            assert httpx.get(f"{server}/health", timeout=5).status_code == 200
            completion = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}],
                                                        max_tokens=4)
            assert completion.choices[0].finish_reason in ("length", "stop")
            answered_at = time.monotonic() - opened
            # before the deadline frees the 1000 sockets: a server they block would answer only then
            assert answered_at < HEADER_TIMEOUT_S - 0.5
            if answered_at >= HEADER_TIMEOUT_S - 1:
                break
        for s in slow + idle:  # each closed by the server without an answer, at the deadline
            s.settimeout(HEADER_TIMEOUT_S + 10)
            assert s.recv(100) == b""
        waited = time.monotonic() - opened
        assert HEADER_TIMEOUT_S - 0.5 < waited < HEADER_TIMEOUT_S + 10
    finally:
        for s in slow + idle:
            s.close()
    assert httpx.get(f"{server}/health", timeout=5).status_code == 200
    closed = _closed(server)
    assert closed["header_timeout"] - closed_before["header_timeout"] == NUM_SLOW
    assert closed["idle"] - closed_before["idle"] >= NUM_IDLE  # and the test's own keep-alive connections


def _closed(url: str) -> dict[str, float]:
    """velollm_connections_closed_total by reason, from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    counts = {"idle": 0.0, "header_timeout": 0.0, "request_line_too_long": 0.0, "headers_too_large": 0.0}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "velollm_connections_closed_total":
                counts[sample.labels["reason"]] = sample.value
    return counts


def test_slow_headers_within_the_deadline_are_answered(server):
    request = b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    with _connect(_port(server)) as s:
        pause = (HEADER_TIMEOUT_S * 0.6) / len(request)
        for byte in request:
            s.sendall(bytes([byte]))
            time.sleep(pause)
        s.settimeout(10)
        answer = _read_all(s)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b'"models":["demo"]}')


def test_a_byte_at_a_time_does_not_push_the_deadline_back(server):
    with _connect(_port(server)) as s:
        t0 = time.monotonic()
        s.sendall(b"GET /health HTTP/1.1\r\n")
        s.settimeout(0.2)
        closed_after = None
        while closed_after is None and time.monotonic() - t0 < HEADER_TIMEOUT_S + 8:
            try:
                s.sendall(b"X")  # one byte of an endless header name, every 0.2 s
                if s.recv(100) == b"":
                    closed_after = time.monotonic() - t0
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - t0
    assert closed_after is not None and HEADER_TIMEOUT_S - 0.5 < closed_after < HEADER_TIMEOUT_S + 5


def test_the_deadline_restarts_after_each_response_and_spares_long_streams(server):
    """A keep-alive connection: a stream lasting longer than the deadline is not cut, and the next request on
    the same connection, sent after the deadline counted from the connect, is answered."""
    with httpx.Client(base_url=server, timeout=60) as client:
        first = client.get("/health")
        assert first.status_code == 200
        t0 = time.monotonic()
        body = {"model": "demo", "prompt": "hello", "options": {"num_predict": STREAM_TOKENS, "temperature": 0}}
        with client.stream("POST", "/api/generate", json=body) as response:
            lines = [json.loads(line) for line in response.iter_lines() if line]
        took = time.monotonic() - t0
        assert lines[-1]["done"] is True and lines[-1]["eval_count"] == STREAM_TOKENS
        assert took > HEADER_TIMEOUT_S, f"the stream took {took:.1f} s: too short to show anything"
        again = client.get("/health")
        assert again.status_code == 200
        assert _client_addr(again) == _client_addr(first)  # the same connection


def _client_addr(response: httpx.Response) -> tuple:
    return response.extensions["network_stream"].get_extra_info("client_addr")


def test_a_stalled_json_body_is_a_408_in_the_route_format(server):
    with _connect(_port(server)) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"model\": ")
        t0 = time.monotonic()
        s.settimeout(HEADER_TIMEOUT_S + 10)
        answer = _read_all(s)
    assert HEADER_TIMEOUT_S - 0.5 < time.monotonic() - t0 < HEADER_TIMEOUT_S + 5
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"]["code"] == "request_timeout"


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_url_over_64_kib_is_a_json_414_in_the_client_format(server):
    """A GET whose query string is over 64 KiB (through http.client: httpx, so the openai and ollama SDKs,
    refuses a URL over 64 KiB itself): the client's wire format, not uvicorn's plain-text 400 (OpenAI's error
    on /v1, Ollama's on its routes); the server serves on."""
    import http.client

    host, port = server.removeprefix("http://").rsplit(":", 1)
    for path, size, want in (
            ("/v1/models", 70_000, {"error": {"message": "the request line is over 64 KiB (its URL is too long)",
                                              "type": "invalid_request_error", "param": None,
                                              "code": "uri_too_long"}}),
            ("/api/tags", 1 << 20, {"error": "the request line is over 64 KiB (its URL is too long)"})):
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request("GET", f"{path}?q={'a' * size}")
        except (BrokenPipeError, ConnectionResetError):  # refused before it was all sent: the answer is there
            pass
        r = conn.getresponse()
        assert (r.status, r.getheader("content-type"), json.loads(r.read())) == (414, "application/json", want)
        conn.close()
    assert _closed(server)["request_line_too_long"] >= 2
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=30)
    assert [m.id for m in client.models.list(extra_query={"q": "a" * 60_000})] == ["demo"]
    assert httpx.get(f"{server}/api/tags", params={"q": "a" * 60_000}, timeout=30).status_code == 200
