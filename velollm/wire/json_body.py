"""Client JSON as the server can hold it: the one reader of request bodies (and of JSON inside them).

Python's json module accepts what no JSON peer sends (NaN, Infinity, numbers past the float range that
become inf, lone UTF-16 surrogates) and everything downstream recurses once per nesting level (jsonschema,
xgrammar, json.dumps): a body nested ~1000 levels deep was a RecursionError 500 on every route. Here
each of those is a 400 that names the field, before any handler reads the body.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable
from typing import Any

from velollm.errors import InvalidRequest
from velollm.wire import scope_state
from velollm.wire.json_items import loads_by_items

# Deeper than any request a client means to send (a tool schema 25 levels deep fits), far below the
# interpreter's recursion limit, which every later reader (jsonschema, grammar compilers) must stay under.
MAX_JSON_DEPTH = 64

# Bodies this big or bigger are parsed and checked on a worker thread (`parse_json_off_loop`): 200,000 chat
# messages (11 MB) take about 0.5 s, which held every other request and stream on the event loop meanwhile.
# Smaller ones are parsed in place, where a thread's hand-off would cost more than the parse.
OFF_LOOP_BYTES = 1 << 20

# Where a middleware that has parsed and checked a request's body (the response cache) leaves it for the
# endpoint, which would otherwise parse and check the same bytes again.
_PARSED_BODY = "velollm.parsed_body"


def hand_over(scope: dict[str, Any], body: dict[str, Any]) -> None:
    """Leaves `body`, parsed from the bytes the endpoint will receive, for `take_handed` to return."""
    scope_state.leave(scope, _PARSED_BODY, body)


def take_handed(scope: dict[str, Any]) -> dict[str, Any] | None:
    """The body a middleware handed over for this request (once), or None: parse it yourself."""
    return scope_state.take(scope, _PARSED_BODY)


def parse_json(data: bytes | str, what: str = "request body", prefix: str = "",
               loads: Callable[[bytes | str], Any] = json.loads) -> Any:
    """`data` parsed and checked (`check_json`); an InvalidRequest naming `what` / the field otherwise."""
    try:
        value = loads(data)
    except RecursionError:
        top = _deep_field(data)
        raise InvalidRequest(f"{top or what} is nested more than {MAX_JSON_DEPTH} levels deep",
                             param=top or prefix.rstrip(".") or None) from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, and ints over 4300 digits
        raise InvalidRequest(f"invalid JSON in {what}: {exc}", param=prefix.rstrip(".") or None) from exc
    check_json(value, prefix)
    return value


async def parse_json_off_loop(data: bytes | str, what: str = "request body", prefix: str = "") -> Any:
    """`parse_json`, on a worker thread for a body of OFF_LOOP_BYTES or more (the event loop serves the other
    requests meanwhile), its top-level arrays read item by item (json_items: json.loads would hold the GIL, and
    so the loop, until the whole body is read)."""
    if len(data) < OFF_LOOP_BYTES:
        return parse_json(data, what, prefix)
    return await asyncio.to_thread(parse_json, data, what, prefix, loads_by_items)


def check_json(value: Any, prefix: str = "") -> None:
    """An InvalidRequest naming the first field that is nested deeper than MAX_JSON_DEPTH, a number
    that is not finite, or a string with a lone surrogate. Iterative: any depth is safe to walk.
    Paths are built only to name a fault: a clean body (nearly every one) is walked without them."""
    if not _is_clean(value):
        _raise_first_fault(value, prefix)


def _text_ok(text: Any) -> bool:
    """No lone surrogate in `text`. isascii() is O(1) on str (CPython keeps the flag), so ASCII strings
    of any length cost nothing; the others are encoded, the one check CPython has in C."""
    if not isinstance(text, str) or text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_clean(value: Any) -> bool:
    """Whether `value` passes check_json, walked without the paths that only an error needs.

    Exact type tests: json.loads makes nothing else, and they cost a third of isinstance's; any other
    type (a caller's own value) goes to the full walk, which judges it as before."""
    isfinite = math.isfinite
    stack: list[tuple[Any, int]] = [([value], 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return False
        if type(node) is dict:
            for key in node:
                if type(key) is not str or not (key.isascii() or _text_ok(key)):
                    return False
            node = node.values()
        for item in node:
            kind = type(item)
            if kind is str:
                if not (item.isascii() or _text_ok(item)):
                    return False
            elif kind is dict or kind is list:
                stack.append((item, depth + 1))
            elif kind is float:
                if not isfinite(item):
                    return False
            elif kind is not int and kind is not bool and item is not None:
                return False
    return True


def _raise_first_fault(value: Any, prefix: str) -> None:
    """The InvalidRequest for the first fault of `value`, its field named (the walk again, with paths)."""
    stack: list[tuple[Any, str, int]] = [(value, prefix.rstrip("."), 1)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, dict):
            _check_depth(path, depth)
            for key, item in node.items():
                _check_text(key, path or "request body", "keys")
                stack.append((item, f"{path}.{key}" if path else str(key), depth + 1))
        elif isinstance(node, list):
            _check_depth(path, depth)
            for i, item in enumerate(node):
                if isinstance(item, (dict, list, str, float)):
                    stack.append((item, f"{path}[{i}]", depth + 1))
        else:
            _check_scalar(node, path)


_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _deep_field(data: bytes | str) -> str | None:
    """The top-level key whose value nests too deep (json.loads gave up before we could walk it)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    depth, key = 0, None
    for m in _TOKEN.finditer(raw):
        token = m.group()
        if token[:1] == b'"':
            if depth == 1:
                key = token
        else:
            depth += 1 if token in (b"[", b"{") else -1
            if depth > MAX_JSON_DEPTH:
                break
    if key is None or raw.lstrip()[:1] != b"{":
        return None
    try:
        return str(json.loads(key))
    except ValueError:
        return None


def _check_depth(path: str, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        top = path.split(".", 1)[0].split("[", 1)[0] or None
        raise InvalidRequest(f"{top or 'request body'} is nested more than {MAX_JSON_DEPTH} levels deep",
                             param=top)


def _check_scalar(node: Any, path: str) -> None:
    if isinstance(node, float) and not math.isfinite(node):
        shown = "NaN" if math.isnan(node) else "a number beyond the float range"
        raise InvalidRequest(f"{path or 'request body'} must be a finite number, got {shown}", param=path or None)
    if isinstance(node, str):
        _check_text(node, path or "request body", "")


def _check_text(text: str, path: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = text[exc.start]
        where = f"{path} {what}".strip()
        raise InvalidRequest(f"{where} holds a lone surrogate (\\u{ord(char):04x}), which is no Unicode "
                             "character", param=path if path != "request body" else None) from None
