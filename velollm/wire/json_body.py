"""Client JSON as the server can hold it: the one reader of request bodies (and of JSON inside them).

Python's json module accepts what no JSON peer sends (NaN, Infinity, numbers past the float range that
become inf, lone UTF-16 surrogates) and everything downstream recurses once per nesting level (jsonschema,
xgrammar, json.dumps): a body nested ~1000 levels deep was a RecursionError 500 on every route. Here
each of those is a 400 that names the field, before any handler reads the body.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from velollm.errors import InvalidRequest

# Deeper than any request a client means to send (a tool schema 25 levels deep fits), far below the
# interpreter's recursion limit, which every later reader (jsonschema, grammar compilers) must stay under.
MAX_JSON_DEPTH = 64


def parse_json(data: bytes | str, what: str = "request body", prefix: str = "") -> Any:
    """`data` parsed and checked (`check_json`); an InvalidRequest naming `what` / the field otherwise."""
    try:
        value = json.loads(data)
    except RecursionError:
        top = _deep_field(data)
        raise InvalidRequest(f"{top or what} is nested more than {MAX_JSON_DEPTH} levels deep",
                             param=top or prefix.rstrip(".") or None) from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, and ints over 4300 digits
        raise InvalidRequest(f"invalid JSON in {what}: {exc}", param=prefix.rstrip(".") or None) from exc
    check_json(value, prefix)
    return value


def check_json(value: Any, prefix: str = "") -> None:
    """An InvalidRequest naming the first field that is nested deeper than MAX_JSON_DEPTH, a number
    that is not finite, or a string with a lone surrogate. Iterative: any depth is safe to walk."""
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
