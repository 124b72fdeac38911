"""loads_by_items: json.loads of a big request body, its top-level arrays read one item at a time.

json.loads is one C call that holds the GIL until the whole document is read: on a worker thread
(json_body.parse_json_off_loop) it still held the event loop 235-300 ms for a 10 MB body of 230,000 short chat
messages, 36 ms for one of 22,000 (2 shared cores). Read here with the same C scanner, one top-level value or
one item of a top-level array (messages, tools, input) per call, the interpreter switches threads between calls:
the loop waited at most 69 ms and 20 ms (what is left is mostly the garbage collector's passes over the new
objects; a single 10 MB string is still one call, ~55 ms). The price is on the worker: 2.5-3x json.loads's time
(22,000 messages: 83 ms against 32-50), for bodies of 1 MiB or more only. Same values as json.loads, and a
json.JSONDecodeError (a ValueError) for what json.loads refuses.
"""

from __future__ import annotations

import json
import re
from typing import Any

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_SPACE = " \t\n\r"


def loads_by_items(data: bytes | str) -> Any:
    """json.loads(data), a top-level object's array values read item by item (anything else: json.loads)."""
    text = data.decode(json.detect_encoding(data), "surrogatepass") if isinstance(data, bytes | bytearray) else data
    pos = _skip(text, 0)
    if not text.startswith("{", pos):
        return json.loads(text)
    value, pos = _object(text, pos)
    pos = _skip(text, pos)
    if pos != len(text):
        raise json.JSONDecodeError("Extra data", text, pos)
    return value


def _skip(text: str, pos: int) -> int:
    return _WHITESPACE.match(text, pos).end()  # type: ignore[union-attr]  # matches the empty string anywhere


def _object(text: str, pos: int) -> tuple[dict[str, Any], int]:
    obj: dict[str, Any] = {}
    pos = _skip(text, pos + 1)
    if text.startswith("}", pos):
        return obj, pos + 1
    while True:
        if not text.startswith('"', pos):
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, pos)
        key, pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, pos)
        if not text.startswith(":", pos):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, pos)
        pos = _skip(text, pos + 1)
        obj[key], pos = _array(text, pos) if text.startswith("[", pos) else _DECODER.raw_decode(text, pos)
        pos = _skip(text, pos)
        if text.startswith("}", pos):
            return obj, pos + 1
        if not text.startswith(",", pos):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
        pos = _skip(text, pos + 1)


def _array(text: str, pos: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    pos = _skip(text, pos + 1)
    if text.startswith("]", pos):
        return items, pos + 1
    scan = _DECODER.scan_once
    while True:
        try:
            item, pos = scan(text, pos)
        except StopIteration as e:
            raise json.JSONDecodeError("Expecting value", text, e.value) from None
        items.append(item)
        if text.startswith(", ", pos) and text[pos + 2:pos + 3] not in _SPACE:  # json.dumps' separator: no regex
            pos += 2
            continue
        pos = _skip(text, pos)
        if text.startswith("]", pos):
            return items, pos + 1
        if not text.startswith(",", pos):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
        pos = _skip(text, pos + 1)
