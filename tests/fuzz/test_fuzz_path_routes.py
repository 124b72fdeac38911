"""Property-based fuzzing of the routes reached by path and query string (path_strategies.py): every GET,
HEAD and DELETE route, and the stored chat completion's metadata update, against a real `velollm serve` and
through `--proxy-only` in front of it.

Each target first stores a few chat completions and responses (`store: true`), which most requests name.
For every answer (checks.check_path_answer): no 5xx, a 404 / 405 (Allow listing every method of the path)
in the path's wire format, /health answering within a second, the KV blocks back to zero; and the stored rows
are as they were, but for the one a 200 to a DELETE or a metadata update names (a delete of a hostile id
deletes nothing else). Requests go out with http.client, which sends a path as given (`..` and all).
"""

from __future__ import annotations

import http.client
import re
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.routing import compile_path

from tests.fuzz.checks import check_path_answer
from tests.fuzz.conftest import EXAMPLES, FuzzTarget
from tests.fuzz.path_strategies import ROUTES, Known, PathRequest, registered
from tests.fuzz.strategies import MODEL
from tests.fuzz.strategies import ROUTES as POST_ROUTES
from tests.fuzz.test_fuzz_admin_routes import METHODS as ADMIN_METHODS
from tests.fuzz.test_fuzz_routes import _SETTINGS, _healthy

MIN_ROWS = 3  # stored chat completions and responses kept on each target (a fuzzed delete removes one)
_TEMPLATES = [(compile_path(path)[0], methods) for path, methods in registered().items()]


class RawClient:
    """One keep-alive connection (reopened when the server closed it) that sends the target as given."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.conn: http.client.HTTPConnection | None = None

    def send(self, req: PathRequest) -> httpx.Response:
        headers = {"content-type": req.content_type} if req.content_type else {}
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            try:
                try:
                    self.conn.request(req.method, req.target, body=req.body or None, headers=headers)
                except (BrokenPipeError, ConnectionResetError):  # a 413 answered before the whole body was read
                    if not req.body:
                        raise
                answer = self.conn.getresponse()
                content = answer.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt:
                    raise
                continue
            if answer.will_close:
                self.close()
            return httpx.Response(answer.status, headers=answer.getheaders(), content=content)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _quoted(text: str) -> str:
    return quote(text, safe="")


def allowed_here(target: str) -> frozenset[str] | None:
    """The methods of the registered paths that `target`'s decoded path matches (None: no route)."""
    path = unquote(target.split("?", 1)[0])
    methods = [m for regex, m in _TEMPLATES if regex.match(path)]
    return frozenset().union(*methods) if methods else None


# --- the stored rows ----------------------------------------------------------------------------


def _store_chat(client: httpx.Client, known: Known) -> None:
    n = len(known.chats)
    body = {"model": MODEL, "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": f"hi {n}"}],
            "max_tokens": 2, "store": True, "metadata": {"k": f"v{n % 2}", "team": "a"}}
    answer = client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    chat_id = answer.json()["id"]
    messages = client.get(f"/v1/chat/completions/{quote(chat_id, safe='')}/messages", params={"limit": 100})
    assert messages.status_code == 200, messages.text
    known.chats.append(chat_id)
    known.messages[chat_id] = [m["id"] for m in messages.json()["data"]]


def _store_response(client: httpx.Client, known: Known) -> None:
    body: dict[str, Any] = {"model": MODEL, "input": [{"role": "user", "content": "hi"}], "max_output_tokens": 2,
                            "store": True}
    roots = [r for r in known.responses if len(known.items[r]) == 1]
    if len(known.responses) % 2:  # a conversation (two turns, within the context), so that input_items has pages
        body["previous_response_id"] = roots[-1] if roots else known.responses[-1]
    answer = client.post("/v1/responses", json=body)
    assert answer.status_code == 200, answer.text
    response_id = answer.json()["id"]
    items = client.get(f"/v1/responses/{quote(response_id, safe='')}/input_items", params={"limit": 100})
    assert items.status_code == 200, items.text
    known.responses.append(response_id)
    known.items[response_id] = [i["id"] for i in items.json()["data"]]


def _fill(client: httpx.Client, known: Known) -> None:
    while len(known.chats) < MIN_ROWS:
        _store_chat(client, known)
    while len(known.responses) < MIN_ROWS:
        _store_response(client, known)


def snapshot(client: httpx.Client, known: Known) -> dict[str, Any]:
    """Every stored chat completion (the whole list) and the known responses, by `chat:ID` / `response:ID`."""
    rows: dict[str, Any] = {}
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = client.get("/v1/chat/completions", params=params)
        assert page.status_code == 200, page.text
        listing = page.json()
        rows.update({f"chat:{c['id']}": c for c in listing["data"]})
        if not listing["has_more"]:
            break
        params["after"] = listing["last_id"]
    for response_id in known.responses:
        answer = client.get(f"/v1/responses/{quote(response_id, safe='')}")
        if answer.status_code == 200:
            rows[f"response:{response_id}"] = answer.json()
    return rows


def _expected(before: dict[str, Any], req: PathRequest, answer: httpx.Response, known: Known) -> dict[str, Any]:
    """The rows after `req`: those before, less the one a 200 to a delete removed, with the one a 200 to a
    metadata update changed; `known` follows."""
    expected = dict(before)
    if answer.status_code != 200 or req.method not in ("DELETE", "POST"):
        return expected
    kind = "chat" if req.route.endswith("/v1/chat/completions/{id}") else "response"
    changed = answer.json()["id"]
    key = f"{kind}:{changed}"
    where = f"{req!r} -> {answer.status_code} {answer.text[:300]}"
    assert key in before, f"a 200 for a row that was not stored: {where}"
    assert unquote(req.target.split("?")[0].rsplit("/", 1)[-1]) == changed, f"another row changed: {where}"
    if req.method == "POST":
        expected[key] = answer.json()
    else:
        del expected[key]
        if kind == "chat":
            known.chats.remove(changed)
        else:
            known.responses.remove(changed)
    return expected


def _check_named(req: PathRequest, answer: httpx.Response) -> None:
    """A 200 for one stored row is the row the path names (its id decoded as the router decodes it); a page
    of a row's messages holds that row's; a page is one for a limit of 1 to 100 (ASCII digits), and keeps to it."""
    if answer.status_code != 200 or req.method == "HEAD" or not answer.headers.get("content-type", "").startswith(
            "application/json"):
        return
    path, _, query = req.target.partition("?")
    segments = unquote(path).split("/")
    where = f"{req!r} -> {answer.text[:300]}"
    if answer.json().get("object") == "list" and "first_id" in answer.json():  # a cursor page: a limit it kept to
        limit = dict(parse_qsl(query, keep_blank_values=True)).get("limit", "20")  # the last one, as Starlette
        assert limit.isascii() and limit.isdigit() and 1 <= int(limit) <= 100, where
        assert len(answer.json()["data"]) <= int(limit), where
    if req.route.endswith("{id}") and len(segments) == 4:
        assert answer.json()["id"] == segments[3], where
    elif req.route.endswith("{id}/messages") and len(segments) == 5:
        assert all(m["id"].startswith(segments[3] + "-") for m in answer.json()["data"]), where


def _diff(expected: dict[str, Any], after: dict[str, Any]) -> str:
    lost, added = sorted(set(expected) - set(after)), sorted(set(after) - set(expected))
    changed = sorted(k for k in set(expected) & set(after) if expected[k] != after[k])
    return f"lost {lost[:5]}, appeared {added[:5]}, changed {changed[:5]}"


@pytest.fixture(scope="module")
def native_rows(native) -> Known:
    return _rows(native)


@pytest.fixture(scope="module")
def proxy_rows(proxy) -> Known:
    return _rows(proxy)


def _rows(target: FuzzTarget) -> Known:
    known = Known()
    with httpx.Client(base_url=target.url, timeout=120) as client:
        _fill(client, known)
        known.models = [m["id"] for m in client.get("/v1/models").json()["data"]]
    return known


def _fuzz(target: FuzzTarget, known: Known, route: str, examples: int) -> None:
    sender = RawClient(target.url)
    with httpx.Client(base_url=target.url, timeout=120) as client:
        state = {"rows": snapshot(client, known)}

        @settings(max_examples=examples, **_SETTINGS)
        @given(st.data())
        def run(data: st.DataObject) -> None:
            req = data.draw(ROUTES[route](known))
            answer = sender.send(req)
            check_path_answer(req.method, req.target, route, allowed_here(req.target), answer)
            _check_named(req, answer)
            expected = _expected(state["rows"], req, answer, known)
            after = snapshot(client, known)
            assert after == expected, f"stored rows changed by {req!r}: {_diff(expected, after)}"
            if len(known.chats) < MIN_ROWS or len(known.responses) < MIN_ROWS:
                _fill(client, known)
                after = snapshot(client, known)
            state["rows"] = after

        try:
            run()
        finally:
            sender.close()


def test_every_route_is_fuzzed():
    """Each registered (method, path) has a strategy here, a POST body strategy (strategies.py) or a model
    management one (test_fuzz_admin_routes.py): a new route fails this test until it gets one."""
    covered = {tuple(route.split()) for route in ROUTES}
    covered |= {("POST", path) for path in POST_ROUTES}
    covered |= {(method, path) for path, method in ADMIN_METHODS.items()}
    covered |= {("HEAD", "/api/blobs/{digest}"), ("POST", "/api/blobs/{digest}")}
    covered |= {("HEAD", path) for method, path in set(covered) if method == "GET"}  # HEAD: drawn with the GETs
    missing = sorted(f"{method} {path}" for path, methods in registered().items() for method in methods
                     if (method, path) not in covered)
    assert not missing, f"registered routes no fuzz strategy covers: {missing}"


@pytest.mark.parametrize("route", list(ROUTES))
def test_native_path_route(native, native_rows, route):
    _fuzz(native, native_rows, route, EXAMPLES)
    _healthy(native, native.url)


@pytest.mark.parametrize("route", list(ROUTES))
def test_proxy_path_route(native, proxy, proxy_rows, route):
    """The same requests through `--proxy-only`: the stored rows are the proxy's own, models the upstream's."""
    _fuzz(proxy, proxy_rows, route, max(10, EXAMPLES // 4))
    _healthy(proxy, native.url)


def test_strategies_name_stored_rows():
    """Most drawn ids are stored ones (the fuzz reaches past the 404)."""
    known = Known(chats=["chatcmpl-abc"])
    hits = []

    @settings(max_examples=200, database=None)
    @given(ROUTES["GET /v1/chat/completions/{id}"](known))
    def run(req: PathRequest) -> None:
        hits.append(bool(re.fullmatch(r"/v1/chat/completions/chatcmpl-abc", req.target.split("?")[0])))

    run()
    assert sum(hits) > len(hits) // 3


@pytest.mark.parametrize("which", ["native", "proxy"])
def test_store_races(native, request, which):
    """8 clients retrieve, update, list, page and delete the same stored rows at once, and store new ones:
    each answers as it would alone (a row deleted under a page is its 400 / 404, never a 500), a row is deleted
    once (one 200 per id), and what is left lists and retrieves whole. Natively and through the proxy (whose
    own store keeps what it relayed)."""
    import random
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    target: FuzzTarget = request.getfixturevalue(which)
    known = Known()
    with httpx.Client(base_url=target.url, timeout=120) as client:
        for _ in range(4):
            _store_chat(client, known)
            _store_response(client, known)
    chats, responses = list(known.chats), list(known.responses)

    def requests(rng: random.Random) -> tuple[str, str, dict[str, Any] | None]:
        chat, response = _quoted(rng.choice(chats)), _quoted(rng.choice(responses))
        return rng.choice([
            ("GET", f"/v1/chat/completions/{chat}", None), ("DELETE", f"/v1/chat/completions/{chat}", None),
            ("POST", f"/v1/chat/completions/{chat}", {"metadata": {"k": str(rng.random())}}),
            ("GET", f"/v1/chat/completions?limit=2&after={chat}", None), ("GET", f"/v1/chat/completions/{chat}/messages", None),
            ("GET", f"/v1/responses/{response}", None), ("DELETE", f"/v1/responses/{response}", None),
            ("GET", f"/v1/responses/{response}/input_items?limit=1", None),
            ("POST", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                                              "max_tokens": 1, "store": True}),
        ])

    def client(seed: int) -> tuple[list[str], list[str]]:
        rng, bad, deleted = random.Random(seed), [], []
        with httpx.Client(base_url=target.url, timeout=120) as http:
            for _ in range(EXAMPLES):
                method, path, body = requests(rng)
                answer = http.request(method, path, json=body)
                if answer.status_code not in (200, 400, 404):
                    bad.append(f"{method} {path} -> {answer.status_code}: {answer.text[:300]}")
                elif method == "DELETE" and answer.status_code == 200:
                    deleted.append(answer.json()["id"])
        return bad, deleted

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(client, range(8)))
    bad = [line for lines, _ in results for line in lines]
    assert not bad, bad[:5]
    twice = [i for i, n in Counter(i for _, ids in results for i in ids).items() if n > 1]
    assert not twice, f"deleted more than once: {twice}"
    with httpx.Client(base_url=target.url, timeout=120) as http:
        listed = snapshot(http, Known(responses=responses))
        for key, row in listed.items():
            kind, row_id = key.split(":", 1)
            path = f"/v1/chat/completions/{_quoted(row_id)}" if kind == "chat" else f"/v1/responses/{_quoted(row_id)}"
            assert http.get(path).json() == row, key
    _healthy(target, native.url)
