"""JSON minification of tool results: a tool message whose content is a JSON object or array is written
again without the indentation and spaces (same value, fewer tokens)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from velollm.context.text_memo import TextMemo

# Each text parsed once (a chat sends the same tool results every turn), within 8M characters of texts
# and results: tool results are the client's, as large as it likes.
_MEMO = TextMemo(max_entries=1024, max_chars=8 << 20)


def minify(text: str) -> str | None:
    """`text` as compact JSON, or None when it is not a JSON object or array."""
    return _MEMO.memoised(_minify, text) or None


def _minify(text: str) -> str:
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return ""  # not JSON: "" is no JSON value's text
    try:
        value = json.loads(stripped)
    except ValueError:
        return ""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def minify_tool_results(messages: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for message in messages:
        content = message.get("content")
        if message.get("role") == "tool" and isinstance(content, str):
            compact = minify(content)
            if compact is not None and len(compact) < len(content):
                message = {**message, "content": compact}
        out.append(message)
    return out
