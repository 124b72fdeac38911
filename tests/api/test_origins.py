"""Browser origins: any request from a disallowed Origin is a 403 (as in Ollama), not only its preflight."""

from __future__ import annotations

import httpx
import pytest
from starlette.testclient import TestClient

from tests.api.conftest import stub_app
from tests.serve_process import start_serve, stop_serve
from velollm.api.origins import OriginPolicy

EVIL = "https://evil.example"
TEXT_PLAIN = {"Content-Type": "text/plain"}  # a "simple" request: browsers send it without a preflight


@pytest.mark.parametrize("origin,allowed", [
    ("http://localhost", True), ("http://localhost:3000", True), ("https://127.0.0.1:8443", True),
    ("http://[::1]:5173", True), ("http://0.0.0.0:1", True), ("app://obsidian.md", True),
    ("file://", True), ("tauri://localhost", True), ("vscode-webview://abc", True), ("vscode-file://vscode-app", True),
    (EVIL, False), ("http://localhost.evil.example", False), ("http://127.0.0.1.evil.example", False),
    ("null", False), ("https://ui.example.com", False)])
def test_default_origins_are_ollamas(origin, allowed):
    assert OriginPolicy().allows(origin, host="127.0.0.1:11434") is allowed


def test_extra_origins_with_wildcards():
    policy = OriginPolicy(("https://*.example.com", "https://ui.example.org"))
    assert policy.allows("https://chat.example.com", None) and policy.allows("https://a.b.example.com", None)
    assert policy.allows("https://ui.example.org", None) and policy.allows("HTTPS://UI.EXAMPLE.ORG", None)
    assert not policy.allows("https://example.com.evil.net", None)
    assert not policy.allows("http://chat.example.com", None)
    assert not policy.allows("https://ui.example.org.evil.net", None)
    assert OriginPolicy(("*",)).allows(EVIL, None)


def test_same_origin_is_allowed():
    """The status page served by this server, opened at its LAN address (no --cors-origins needed)."""
    assert OriginPolicy().allows("http://192.168.1.5:8000", host="192.168.1.5:8000")
    assert not OriginPolicy().allows("http://192.168.1.5:8000", host="192.168.1.6:8000")


def test_disallowed_origin_gets_403_in_the_wire_format():
    with TestClient(stub_app(), base_url="http://127.0.0.1:8000") as c:
        body = '{"model": "demo", "prompt": "hi", "stream": false}'
        r = c.post("/api/generate", content=body, headers={**TEXT_PLAIN, "Origin": EVIL})
        assert r.status_code == 403 and "not allowed" in r.json()["error"], r.text
        r = c.post("/v1/completions", content=body, headers={**TEXT_PLAIN, "Origin": EVIL})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_origin"
        preflight = c.options("/v1/chat/completions", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers
        ok = c.post("/api/generate", content=body, headers={**TEXT_PLAIN, "Origin": "http://localhost:3000"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert c.post("/api/generate", content=body, headers=TEXT_PLAIN).status_code == 200  # no Origin: SDKs, curl


def test_live_server_refuses_cross_origin_simple_requests(tmp_path):
    proc, url, _log, _ = start_serve(tmp_path, "--max-model-len", "256", "--cors-origins", "https://*.example.com",
                                     env={"OLLAMA_ORIGINS": "https://ui.example.org"})
    try:
        body = '{"model": "demo", "prompt": "hi", "stream": false, "options": {"num_predict": 2}}'
        with httpx.Client(timeout=60) as c:
            evil = c.post(f"{url}/api/generate", content=body, headers={**TEXT_PLAIN, "Origin": EVIL})
            assert evil.status_code == 403 and "error" in evil.json()
            sub_origin, env_origin = "https://chat.example.com", "https://ui.example.org"
            sub = c.post(f"{url}/api/generate", content=body, headers={**TEXT_PLAIN, "Origin": sub_origin})
            assert sub.status_code == 200 and sub.headers["access-control-allow-origin"] == sub_origin
            env = c.post(f"{url}/v1/completions", content=body, headers={**TEXT_PLAIN, "Origin": env_origin})
            assert env.status_code == 200  # OLLAMA_ORIGINS
            assert c.post(f"{url}/api/generate", content=body).status_code == 200
            page = c.get(f"{url}/", headers={"Accept": "text/html", "Origin": url})  # same origin: the status page
            assert page.status_code == 200 and "status.js" in page.text
    finally:
        stop_serve(proc)
