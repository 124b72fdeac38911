"""Body size, API key, Host check (DNS rebinding), CORS, queue limit, /health while loading."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from starlette.testclient import TestClient

from tests.api.conftest import ThreadedServer, free_port, start_live, stop_live, stub_app
from tests.api.stub_engine import StubEngine

GOOD = {"model": "demo", "prompt": "hi", "max_tokens": 2}


@pytest.fixture
def client():
    with TestClient(stub_app(api_key="sekret", max_request_bytes=1000), base_url="http://127.0.0.1:8000") as c:
        yield c


AUTH = {"Authorization": "Bearer sekret"}


def test_api_key_required_except_root_and_health(client):
    r = client.post("/v1/completions", json=GOOD)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = client.get("/api/tags", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and isinstance(r.json()["error"], str)
    assert client.get("/health").status_code == 200 and client.get("/").status_code == 200
    assert client.post("/v1/completions", json=GOOD, headers=AUTH).status_code == 200
    assert client.get("/metrics", headers=AUTH).status_code == 200


def test_body_over_limit_is_413(client):
    r = client.post("/v1/completions", json={**GOOD, "prompt": "x" * 2000}, headers=AUTH)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks():  # no Content-Length: the limit must hold on the bytes read
        for _ in range(5):
            yield b"x" * 400

    r = client.post("/api/generate", content=chunks(), headers=AUTH)
    assert r.status_code == 413 and "larger than" in r.json()["error"]
    assert client.post("/v1/completions", json=GOOD, headers=AUTH).status_code == 200


@pytest.mark.parametrize("host,allowed", [("localhost:8000", True), ("127.0.0.1:8000", True), ("[::1]:8000", True),
                                          ("192.168.1.5", True), ("app.localhost", True), ("box.local", True),
                                          ("evil.example.com", False), ("8.8.8.8:8000", False)])
def test_host_header_check_on_loopback(client, host, allowed):
    r = client.get("/api/version", headers={**AUTH, "host": host})
    assert (r.status_code == 200) is allowed, r.text
    if not allowed:
        assert r.status_code == 403


def test_host_check_off_when_bound_to_all_interfaces():
    with TestClient(stub_app(host="0.0.0.0")) as c:
        assert c.get("/api/version", headers={"host": "evil.example.com"}).status_code == 200


def test_cors_preflight(client):
    ok = client.options("/v1/chat/completions", headers={"Origin": "http://localhost:3000",
                                                         "Access-Control-Request-Method": "POST",
                                                         "Access-Control-Request-Headers": "authorization"})
    # Ollama (gin-contrib/cors) answers an accepted preflight 204 No Content, /api and /v1 alike
    assert ok.status_code == 204 and ok.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert ok.content == b"" and "content-length" not in ok.headers and "content-type" not in ok.headers
    assert "Origin" in ok.headers["vary"] and "POST" in ok.headers["access-control-allow-methods"]
    # what the openai SDK (in a browser page) and the ollama JS client send
    sdk_headers = "authorization, content-type, x-stainless-lang, x-stainless-retry-count, openai-beta"
    for path in ("/api/chat", "/api/tags", "/v1/responses"):
        pre = client.options(path, headers={"Origin": "http://127.0.0.1:5173", "Access-Control-Request-Method": "POST",
                                            "Access-Control-Request-Headers": sdk_headers})
        assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == "http://127.0.0.1:5173"
        assert pre.headers["access-control-allow-headers"].lower().count("x-stainless-retry-count") == 1
    refused = client.options("/api/chat", headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method":
                                                   "POST", "Access-Control-Request-Headers": "x-not-allowed"})
    assert refused.status_code == 400  # a header the server does not allow: the browser must not send it
    bad = client.options("/v1/chat/completions", headers={"Origin": "https://evil.example.com",
                                                          "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in bad.headers
    with TestClient(stub_app(cors_origins=("https://ui.example.com",)), base_url="http://localhost") as c:
        r = c.get("/api/version", headers={"Origin": "https://ui.example.com"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://ui.example.com"
        # a page may read VeloLLM's own headers (cache hit, route, context cuts, backend)
        assert "x-velollm-cache" in r.headers["access-control-expose-headers"].lower().split(", ")


def _wait_queued(url: str, headers: dict[str, str] | None = None) -> None:
    """Until the request sent in the background waits in the engine's queue (a thread's request may take a
    while to get there on a loaded machine; a fixed sleep let the third request take its place)."""
    deadline = time.monotonic() + 60
    while 'velollm_queue_size{model="demo"} 1.0' not in httpx.get(f"{url}/metrics", headers=headers).text:
        assert time.monotonic() < deadline, "the second request never waited in the queue"
        time.sleep(0.02)


def _queue_full(url: str, long_body: dict) -> httpx.Response:
    """One request running (streamed, until the third is answered), one waiting, then a third is refused."""
    def background():
        try:
            httpx.post(f"{url}/v1/completions", json={**long_body, "max_tokens": 50}, timeout=60)
        except httpx.HTTPError:
            pass

    with httpx.Client(timeout=60) as c, c.stream("POST", f"{url}/v1/completions", json={**long_body, "stream": True}) as r1:
        assert r1.status_code == 200
        lines = r1.iter_lines()  # held: a dropped iterator closes the connection (and aborts)
        next(lines)
        waiting = threading.Thread(target=background, daemon=True)
        waiting.start()
        _wait_queued(url)
        third = httpx.post(f"{url}/v1/completions", json=GOOD, timeout=30)
    waiting.join(timeout=60)
    return third


def test_queue_full_is_503_with_retry_after():
    engine = StubEngine(max_running=1, max_queue=1, token_delay_s=0.02)
    port = free_port()
    with ThreadedServer(stub_app(engine, port=port), port):
        url = f"http://127.0.0.1:{port}"
        r = _queue_full(url, {"model": "demo", "prompt": "long", "max_tokens": 3000})  # 60 s: cut when answered
        assert r.status_code == 503 and r.headers["retry-after"] and r.json()["error"]["code"] == "overloaded"
        assert httpx.post(f"{url}/v1/completions", json=GOOD, timeout=30).status_code == 200


def test_health_is_503_while_loading(monkeypatch):
    from velollm.api.app import create_app
    from velollm.api.server_config import ServerConfig
    from velollm.engine import async_engine

    loaded = threading.Event()  # the load ends when the test says, not after a time a slow machine may overrun

    def slow_load(model, config, **kwargs):
        assert loaded.wait(60)
        return StubEngine()

    monkeypatch.setattr(async_engine.AsyncEngine, "from_model", staticmethod(slow_load))
    with TestClient(create_app(ServerConfig(stats_interval_s=0)), base_url="http://localhost") as c:
        assert c.get("/health").status_code == 503
        threading.Timer(0.5, loaded.set).start()
        r = c.post("/v1/completions", json={**GOOD, "model": "demo"})  # waits for the load
        assert r.status_code == 200
        assert c.get("/health").status_code == 200


def test_live_limits(tmp_path):
    """The real server: API key, body limit, Host check and the queue limit."""
    proc, url, log = start_live(tmp_path, "--api-key", "KEY", "--max-num-seqs", "1", "--max-queue", "1",
                                "--max-request-bytes", "64KiB")
    try:
        auth = {"Authorization": "Bearer KEY"}
        assert httpx.post(f"{url}/v1/completions", json=GOOD).status_code == 401
        assert httpx.get(f"{url}/health").status_code == 200
        big = httpx.post(f"{url}/api/generate", json={"model": "demo", "prompt": "x" * 70000}, headers=auth)
        assert big.status_code == 413 and "error" in big.json()
        assert httpx.get(f"{url}/api/tags", headers={**auth, "host": "rebind.example.com"}).status_code == 403
        long_body = {"model": "demo", "prompt": "long", "max_tokens": 3000, "ignore_eos": True}

        def post(path, **kw):
            return httpx.post(f"{url}{path}", headers=auth, **kw)

        with httpx.Client(timeout=60, headers=auth) as c, \
                c.stream("POST", f"{url}/v1/completions", json={**long_body, "stream": True}) as r1:
            assert r1.status_code == 200
            lines = r1.iter_lines()
            next(lines)
            waiting = threading.Thread(target=lambda: _swallow(post, "/v1/completions", long_body), daemon=True)
            waiting.start()
            _wait_queued(url, auth)
            third = post("/v1/completions", json=GOOD, timeout=30)
            assert third.status_code == 503 and third.headers["retry-after"], third.text
        waiting.join(timeout=120)
        assert post("/v1/completions", json=GOOD, timeout=60).status_code == 200
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert 'status="503"' in httpx.get(f"{url}/metrics", headers=auth).text
    finally:
        stop_live(proc)


def _swallow(post, path, body):
    try:
        post(path, json={**body, "max_tokens": 50}, timeout=120)
    except httpx.HTTPError:
        pass
