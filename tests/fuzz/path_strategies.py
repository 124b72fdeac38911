"""Hypothesis strategies for the routes a client reaches by path and query string: every GET, HEAD and DELETE
route, and POST /v1/chat/completions/{id} (the stored completion's metadata update).

A request names rows that exist (`Known`: the stored chat completions and responses the test made, their
messages and input items, the served models) most of the time, and otherwise a hostile id: empty, huge, `..`,
`%00`, percent-encoded slashes, a lone surrogate (`%ED%A0%80`), bytes that are no UTF-8, look-alikes of an
existing id, SQL LIKE wildcards. Query strings get negative / zero / huge / non-numeric / float values,
repeated keys, unknown keys, 10,000 keys, `metadata[...]` keys with brackets nested. Some requests use a
method the path does not allow (405, with its Allow header) or carry a body on a GET.

Paths and queries are written as they go on the wire (percent-encoded by hand, raw `/` and `..` included):
test_fuzz_path_routes.py sends them with http.client, which, unlike httpx, sends a path as it is given.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from hypothesis import strategies as st

from tests.fuzz.strategies import body, encode

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@dataclass
class Known:
    """The rows a target holds (made by the test), which most requests name."""

    chats: list[str] = field(default_factory=list)
    messages: dict[str, list[str]] = field(default_factory=dict)  # chat id -> its input messages' ids
    responses: list[str] = field(default_factory=list)
    items: dict[str, list[str]] = field(default_factory=dict)  # response id -> its input items' ids
    models: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PathRequest:
    route: str  # "GET /v1/chat/completions/{id}": the route meant (its method may be swapped for a wrong one)
    method: str
    target: str  # path and query as sent
    body: bytes = b""
    content_type: str | None = None

    def __repr__(self) -> str:  # what the checks' messages print
        return f"{self.method} {self.target[:400]!r} body={self.body[:200]!r} ({self.route})"


def _q(text: str) -> str:
    return quote(text, safe="", errors="surrogatepass")


# uvicorn's HTTP parser refuses a request line past 64 KiB, in plain text, before the app sees it: the targets
# stay under it (10,000 distinct keys fit)
_REQUEST_LINE_MAX = 65_000
_MANY_KEYS = "&".join(f"{i:x}=" for i in range(10_000))

# Hostile ids, as they go into the path (already percent-encoded where they are encoded).
_HOSTILE = ["", ".", "..", "%2E%2E", "%2e", "%00", "a%00b", "%ED%A0%80", "x%ED%B0%80y", "%FF%FE", "%C0%AF",
            "%", "%zz", "%25", "%2F", "a%2Fb", "..%2F..%2Fhealth", "%2F..%2F..%2Fmetrics", "%5C..%5C", "*", "_", "%25%25",
            "%27%20OR%201%3D1--", "%22%3B", "null", "undefined", "%20", "%0A", "%E2%80%AE", "%EF%BB%BF",
            "a/b", "../health", "x/..", "./", "x" * 300, "x" * 5000, "<huge>"]


def _expand(text: str) -> str:
    """The values too long for hypothesis to print in a strategy's repr, spelled out when drawn."""
    return text.replace("<huge>", "x" * 60_000).replace("<many keys>", _MANY_KEYS)


_LOOKALIKES: list[Callable[[str], str]] = [
    lambda i: _q(i.replace("c", "\u0441", 1)),  # Cyrillic es
    lambda i: _q(i.replace("-", "\u2010", 1)),  # hyphen
    lambda i: _q(i.replace("_", "\uff3f", 1)),  # fullwidth low line
    lambda i: _q(i.upper()), lambda i: _q(i[:-1]), lambda i: _q(i) + "%20", lambda i: _q(i) + "%00",
    lambda i: _q(i) + "%", lambda i: _q(i) + "_", lambda i: _q(i[:-1]) + "%25", lambda i: _q(i) + "%2F",
    lambda i: _q(i) + "/", lambda i: _q(i) + "/..", lambda i: _q(i) + "%ED%A0%80", lambda i: _q(i[::-1]),
    lambda i: "".join(f"%{b:02X}" for b in i.encode()),  # the id itself, every byte encoded: the same row
]


def ident(existing: Callable[[], list[str]]) -> st.SearchStrategy[str]:
    """An id in the path: an existing one (three times in four when there are any), else hostile. The ids are
    read when drawn (`existing()`: a fuzzed delete removes one, a new row replaces it), and picked by an index,
    so that hypothesis replays and shrinks the same choices whatever the rows are by then."""
    choice = st.tuples(st.integers(0, 7), st.integers(0, 999), st.sampled_from(_LOOKALIKES), st.sampled_from(_HOSTILE))
    return choice.map(lambda c: _ident(existing(), *c))


def _ident(ids: list[str], kind: int, index: int, lookalike: Callable[[str], str], hostile_id: str) -> str:
    if not ids or kind == 6:
        return _expand(hostile_id)
    real = ids[index % len(ids)]
    return lookalike(real) if kind == 7 else _q(real)


_NUMBERS = ["1", "2", "3", "20", "100", "0", "-1", "101", "-100", "1e3", "1.5", "2.0", "abc", "", "+5", "5_0",
            "%D9%A3", "%EF%BC%93", "%203", "99999999999999999999999", "9" * 5000, "NaN", "inf", "0x10", "%00",
            "%ED%A0%80", "true", "null", "[1]"]
_ORDERS = ["asc", "desc", "desc", "asc", "ASC", "", "random", "%00", "desc%00", "%ED%A0%80", "asc%20"]
_INCLUDES = ["message.input_image.image_url", "file_search_call.results", "reasoning.encrypted_content",
             "", "%ED%A0%80", "x" * 300]
_METADATA_KEYS = ["metadata[k]", "metadata[team]", "metadata%5Bteam%5D", "metadata[a][b]", "metadata[[x]]",
                  "metadata[]", "metadata[", "metadata]", "metadata", "metadata[%00]", "metadata[%ED%A0%80]",
                  "metadata[k]]", "metadata[[k]"]
_METADATA_VALUES = ["v0", "v1", "a", "", "%00", "%ED%A0%80", "x" * 600]


def _pairs(keys: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[list[str]]:
    """`key=value` pairs of a query: some of `keys` (a key `*`: whole pairs), now and then an unknown key or
    brackets nested."""
    pair = st.sampled_from(sorted(keys)).flatmap(lambda k: keys[k] if k == "*" else keys[k].map(lambda v: f"{k}={v}"))
    odd = st.sampled_from(["unknown=1", "limit", "=", "&", "a[b][c][d]=1", "a[]=1&a[]=2", "%5B%5D=x", "x[%00]=y",
                           "limit[]=1", "order[]=asc", "after[x]=y"])
    return st.lists(st.one_of(pair, pair, pair, odd), max_size=5)



@st.composite
def _query(draw: st.DrawFn, keys: dict[str, st.SearchStrategy[str]]) -> str:
    if not keys or draw(st.integers(0, 9)) == 0:  # no query, or one no route reads
        return _expand(draw(st.sampled_from(["", "", "?", "?x=1", "?%ED%A0%80=1", "?<many keys>"])))
    pairs = draw(_pairs(keys))
    if pairs and draw(st.booleans()):
        pairs.append(draw(st.sampled_from(pairs)))  # a repeated key (first or last wins?)
    if draw(st.integers(0, 30)) == 0:
        pairs.append(_expand("<many keys>"))
    return "?" + "&".join(pairs) if pairs else ""


_GET_BODIES = st.one_of(st.just((b'{"limit": 1}', "application/json")), st.just((b"{", "application/json")),
                        st.binary(max_size=30).map(lambda b: (b, "application/octet-stream")),
                        st.just((b"x" * (1 << 20 | 1), "application/json")))


@st.composite
def _request(draw: st.DrawFn, route: str, path: st.SearchStrategy[str], keys: dict[str, st.SearchStrategy[str]],
             content: st.SearchStrategy[bytes] | None = None) -> PathRequest:
    """`route`'s method most of the time (HEAD now and then for a GET), else one the path does not allow; the
    query from `keys`; a body on a GET or DELETE one time in six."""
    method = route.split()[0]
    roll = draw(st.integers(0, 11))
    if roll == 0:
        method = draw(st.sampled_from([m for m in METHODS if m not in allowed(route) and m != "HEAD"]))
    elif roll == 1 and method == "GET":
        method = "HEAD"
    target = draw(path)
    query = draw(_query(keys))
    if len(target) + len(query) < _REQUEST_LINE_MAX:
        target += query
    data, content_type = b"", None
    if content is not None and method == "POST":
        data, content_type = draw(content), "application/json"
    elif draw(st.integers(0, 5)) == 0:
        data, content_type = draw(_GET_BODIES)
    return PathRequest(route, method, target, data, content_type)


def _fixed(path: str) -> Callable[[Known], st.SearchStrategy[str]]:
    odd = st.sampled_from([path + "/", path + "/..", path + "%00", path + "%2F", path.upper(), path + "/%2E%2E"])
    return lambda known: st.one_of(*[st.just(path)] * 6, odd)


def _metadata_update() -> st.SearchStrategy[bytes]:
    values = st.one_of(st.none(), st.dictionaries(st.sampled_from(["k", "team", "x" * 65, ""]),
                                                  st.sampled_from(["v", "a", "", "x" * 513]), max_size=3))
    return body({"metadata": values}, {"model": st.just("demo"), "store": st.booleans()}).map(encode)


def _all_items(known: Known) -> list[str]:
    return [i for ids in known.items.values() for i in ids]


def _all_messages(known: Known) -> list[str]:
    return [i for ids in known.messages.values() for i in ids]


def _limit() -> st.SearchStrategy[str]:
    return st.sampled_from(_NUMBERS)


def _order() -> st.SearchStrategy[str]:
    return st.sampled_from(_ORDERS)


def _chat_path(known: Known, suffix: str = "") -> st.SearchStrategy[str]:
    return ident(lambda: known.chats).map(lambda i: f"/v1/chat/completions/{i}{suffix}")


def _response_path(known: Known, suffix: str = "") -> st.SearchStrategy[str]:
    return ident(lambda: known.responses).map(lambda i: f"/v1/responses/{i}{suffix}")


def _simple(route: str) -> Callable[[Known], st.SearchStrategy[PathRequest]]:
    path = route.split()[1]
    return lambda known: _request(route, _fixed(path)(known), {})


def _models_path(known: Known) -> st.SearchStrategy[str]:
    names = known.models + ["demo:latest", "library/demo", "registry.ollama.ai/library/demo:latest"]
    raw_slash = st.sampled_from(["demo/x", "a/../demo", "../../health", "demo/", "/demo", "x/y/z"])
    return st.one_of(ident(lambda: names), raw_slash).map(lambda m: f"/v1/models/{m}")


ROUTES: dict[str, Callable[[Known], st.SearchStrategy[PathRequest]]] = {
    **{route: _simple(route) for route in (
        "GET /health", "GET /metrics", "GET /", "GET /status.js", "GET /status/upstream", "GET /api/version",
        "GET /api/tags", "GET /api/ps", "GET /v1/models")},
    "GET /v1/models/{model:path}": lambda k: _request("GET /v1/models/{model:path}", _models_path(k), {}),
    # the cancel path drawn with GET too: a 405 naming POST; `stream` of a stored response not made in the
    # background (none here is), and a bad `starting_after`: 400s
    "GET /v1/responses/{id}": lambda k: _request("GET /v1/responses/{id}", st.one_of(
        *[_response_path(k)] * 5, _response_path(k, "/cancel")),
                                                 {"include[]": st.sampled_from(_INCLUDES),
                                                  "stream": st.sampled_from(["true", "false", "1", "x"]),
                                                  "starting_after": st.sampled_from(["0", "-1", "x", "99999"])}),
    # cancelling a response not made in the background: a 400; an unknown id: a 404
    "POST /v1/responses/{id}/cancel": lambda k: _request("POST /v1/responses/{id}/cancel",
                                                         _response_path(k, "/cancel"), {}),
    "DELETE /v1/responses/{id}": lambda k: _request("DELETE /v1/responses/{id}", _response_path(k), {}),
    "GET /v1/responses/{id}/input_items": lambda k: _request(
        "GET /v1/responses/{id}/input_items", _response_path(k, "/input_items"),
        {"after": ident(lambda: _all_items(k)), "before": ident(lambda: _all_items(k)), "limit": _limit(), "order": _order(),
         "include[]": st.sampled_from(_INCLUDES), "include": st.sampled_from(_INCLUDES)}),
    "GET /v1/chat/completions": lambda k: _request(
        "GET /v1/chat/completions", _fixed("/v1/chat/completions")(k),
        {"after": ident(lambda: k.chats), "limit": _limit(), "order": _order(),
         "model": st.sampled_from(["demo", "nope", "", "%00", "%ED%A0%80", "demo%25", "%25", "_"]),
         "*": st.tuples(st.sampled_from(_METADATA_KEYS), st.sampled_from(_METADATA_VALUES)).map("=".join)}),
    "GET /v1/chat/completions/{id}": lambda k: _request("GET /v1/chat/completions/{id}", _chat_path(k), {}),
    "POST /v1/chat/completions/{id}": lambda k: _request("POST /v1/chat/completions/{id}", _chat_path(k), {},
                                                         _metadata_update()),
    "DELETE /v1/chat/completions/{id}": lambda k: _request("DELETE /v1/chat/completions/{id}", _chat_path(k), {}),
    "GET /v1/chat/completions/{id}/messages": lambda k: _request(
        "GET /v1/chat/completions/{id}/messages", _chat_path(k, "/messages"),
        {"after": ident(lambda: _all_messages(k)), "limit": _limit(), "order": _order()}),
}



@functools.cache
def registered() -> dict[str, frozenset[str]]:
    """Path template -> the methods the app answers on it (several routes may share a path): what a wrong
    method's 405 must list. Read from the app itself (a proxy-only one: nothing loads)."""
    from starlette.routing import Route

    from velollm.api.app import create_app
    from velollm.api.server_config import ServerConfig

    out: dict[str, set[str]] = {}
    for route in create_app(ServerConfig(models=(), proxy_only=True)).routes:
        assert isinstance(route, Route), route
        out.setdefault(route.path, set()).update(route.methods or ())
    return {path: frozenset(methods) for path, methods in out.items()}


def allowed(route: str) -> frozenset[str]:
    """The methods the path of `route` answers."""
    return registered()[route.split()[1]]
