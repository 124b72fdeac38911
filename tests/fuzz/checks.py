"""What every answer to a fuzzed request must be: no 5xx, the route's wire format, errors a client can read."""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import unquote

import httpx
from prometheus_client.parser import text_string_to_metric_families

from velollm.wire.errors import is_openai_path

# VeloLLM never downloads models: /api/pull (stream false) without an Ollama upstream is Ollama's 500 for a
# pull it cannot do (api/pull.py).
# VeloLLM pushes only through an Ollama upstream: /api/push without one is a 501 (api/model_admin.py), also
# through the proxy, whose upstream (the native VeloLLM) answers it so.
ALLOWED_5XX = {("/api/pull", 500), ("/api/push", 501)}
EMPTY_OK = ("/api/delete", "/api/copy", "/api/blobs")  # Ollama answers these with an empty body


def check_admin_answer(path: str, method: str, response: httpx.Response) -> None:
    """Model management: an empty 200 (delete, copy) or 200/201 (blobs) allowed besides `check_answer`'s
    formats; HEAD answers carry no body, only a status."""
    route = "/api/blobs" if path.startswith("/api/blobs/") else path
    status = response.status_code
    where = f"{method} {path} -> {status}: {response.text[:500]}"
    assert status < 500 or (route, status) in ALLOWED_5XX, where
    if status in (307, 308):  # a digest with a trailing `/` (`%2F`): the router's redirect without it, as Ollama's
        location = httpx.URL(response.headers["location"])
        assert location.host in ("", response.request.url.host), where  # never another host
        assert location.path.startswith("/api/blobs"), where  # (httpx drops `.` segments: no exact compare)
        return
    if method == "HEAD":
        assert status in (200, 400, 404, 405), where
        return
    if status < 300 and route in EMPTY_OK and not response.content:
        return
    check_answer(route, response)


def check_answer(path: str, response: httpx.Response) -> None:
    status = response.status_code
    where = f"{path} -> {status}: {response.text[:500]}"
    assert status < 500 or (path, status) in ALLOWED_5XX, where
    openai = path.startswith("/v1/")
    content_type = response.headers.get("content-type", "")
    if status >= 400:
        _check_error(_json(response, where), openai, where)
    elif "text/event-stream" in content_type:
        _check_sse(response.text, where)
    elif "ndjson" in content_type:
        for line in filter(None, response.text.split("\n")):  # str.splitlines() also splits JSON text at U+0085
            obj = json.loads(line)
            assert isinstance(obj, dict), where
            if "error" in obj:
                _check_error(obj, False, where)
    else:
        assert isinstance(_json(response, where), dict), where


def _json(response: httpx.Response, where: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise AssertionError(f"not JSON: {where}") from None


def _check_error(body: Any, openai: bool, where: str) -> None:
    assert isinstance(body, dict) and "error" in body, where
    error = body["error"]
    if openai:  # OpenAI's error object, which the openai SDK reads
        assert isinstance(error, dict) and isinstance(error.get("message"), str), where
        assert {"type", "param", "code"} <= error.keys(), where
        assert error["type"] != "server_error", where
    else:  # Ollama's: one string
        assert isinstance(error, str) and error, where
        assert not error.startswith("internal error"), where


def _check_sse(text: str, where: str) -> None:
    lines = re.split(r"\r\n|\r|\n", text)  # SSE's line ends; splitlines() would also split at U+0085, U+2028
    events = [line[len("data: "):] for line in lines if line.startswith("data: ")]
    assert events, where
    for data in events:
        if data == "[DONE]":
            continue
        obj = json.loads(data)
        assert isinstance(obj, dict), where
        error = obj.get("error")
        if isinstance(error, dict):  # an error after the 200: still never the server's fault
            assert error.get("type") != "server_error", where
        if obj.get("type") == "error" or obj.get("type") == "response.failed":
            assert "internal error" not in json.dumps(obj), where


def metric_sum(url: str, name: str) -> float:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, f"/metrics -> {response.status_code}: {response.text[:300]}"
    text = response.text
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == name)


def wait_until_idle(url: str, timeout_s: float = 30.0) -> float:
    """Allocated KV blocks once every request ended (0 is the answer; returns what was last seen)."""
    deadline = time.monotonic() + timeout_s
    blocks = metric_sum(url, "velollm_allocated_blocks")
    while blocks and time.monotonic() < deadline:
        time.sleep(0.1)
        blocks = metric_sum(url, "velollm_allocated_blocks")
    return blocks


def check_path_answer(method: str, target: str, route: str, allowed_here: frozenset[str] | None,
                      response: httpx.Response) -> None:
    """A GET / HEAD / DELETE (or metadata POST) by path and query (test_fuzz_path_routes.py). `target`: the
    path and query as sent; `allowed_here`: the methods of the registered paths the decoded path matches (None:
    it matches none). No 5xx; no route: a 404, a wrong method: a 405 whose Allow lists every method of the
    path; errors in the path's wire format (OpenAI's on /v1, Ollama's elsewhere, by the decoded path as the
    server routes it); a HEAD has no body; a 2xx is what the route gives (JSON, or /metrics' text ...)."""
    path = unquote(target.split("?", 1)[0])  # as uvicorn decodes it for the router
    status = response.status_code
    where = f"{method} {target[:300]!r} ({route}) -> {status}: {response.text[:500]}"
    assert status < 500, where
    if status in (307, 308):  # a trailing `/`: the router's redirect without it, on the same host
        location = httpx.URL(response.headers["location"])
        assert location.host in ("", "127.0.0.1"), where
        return
    if status == 413:  # a body past --max-request-bytes, whatever the route: the limit's error
        _check_error(_json(response, where), is_openai_path(path), where)
        return
    if allowed_here is None:
        assert status == 404, where
    elif method not in allowed_here:
        assert status == 405, where
        allow = {m.strip() for m in response.headers.get("allow", "").split(",") if m.strip()}
        assert allow == allowed_here, f"Allow {sorted(allow)} != {sorted(allowed_here)}: {where}"
    if method == "HEAD":
        assert not response.content, where
        return
    if status >= 400:
        _check_error(_json(response, where), is_openai_path(path), where)
        return
    content_type = response.headers.get("content-type", "")
    if route == "GET /metrics":
        assert content_type.startswith("text/plain"), where
        list(text_string_to_metric_families(response.text))
    elif route == "GET /":
        assert content_type.startswith(("text/plain", "text/html")), where
    elif route == "GET /status.js":
        assert "javascript" in content_type, where
    else:
        assert content_type.startswith("application/json"), where
        obj = _json(response, where)
        assert isinstance(obj, dict), where
        if obj.get("object") == "list" and "first_id" in obj:
            data = obj["data"]
            assert isinstance(data, list) and len(data) <= 100, where
            assert obj["first_id"] == (data[0]["id"] if data else None), where
            assert obj["last_id"] == (data[-1]["id"] if data else None), where
