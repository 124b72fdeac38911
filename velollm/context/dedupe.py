"""Repeated content: a message (tool output, document, system prompt) or a paragraph seen earlier in the
chat is replaced by a short reference to its first occurrence. Lossless: the text is still in the prompt."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MIN_CHARS = 200  # shorter content costs less than the reference would save
_PARAGRAPHS = re.compile(r"\n\s*\n")


def _reference(index: int, message: Mapping[str, Any]) -> str:
    what = "tool result" if message.get("role") == "tool" else f"{message.get('role')} message"
    return f"[identical to the {what} at position {index} above]"


def dedupe(messages: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Each message's content, or each paragraph of it, already seen (>= MIN_CHARS) becomes a reference."""
    seen_messages: dict[str, int] = {}
    seen_paragraphs: dict[str, int] = {}
    out: list[Mapping[str, Any]] = []
    for i, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, str) or len(content) < MIN_CHARS:
            out.append(message)
            continue
        first = seen_messages.setdefault(content, i)
        if first != i:
            out.append({**message, "content": _reference(first, messages[first])})
            continue
        out.append({**message, "content": _dedupe_paragraphs(content, i, messages, seen_paragraphs)})
    return out


def _dedupe_paragraphs(content: str, index: int, messages: list[Mapping[str, Any]],
                       seen: dict[str, int]) -> str:
    parts = _PARAGRAPHS.split(content)
    if len(parts) < 2:
        return content
    changed = False
    for j, part in enumerate(parts):
        if len(part) < MIN_CHARS:
            continue
        first = seen.setdefault(part, index)
        if first != index:
            parts[j] = f"[paragraph identical to one in the {messages[first].get('role')} message at position {first}]"
            changed = True
    return "\n\n".join(parts) if changed else content
