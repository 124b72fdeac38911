"""Summaries of the oldest turns (the lossy step of `compress`): the transcript to summarise, the cache
(by the hash of what is summarised, so a conversation prefix is summarised once), and where the
summary goes (the system prompt, so the user/assistant alternation stays as the template wants it)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

INSTRUCTION = ("Summarize the conversation below in a few sentences. Keep names, numbers, decisions, open "
               "questions and what tools returned; leave out greetings and repetition.")
PREFIX = "Summary of the earlier conversation: "
# The summaries a server remembers per model (velollm.context.text_memo.TextMemo): each is a few hundred
# tokens under a 64-character key.
SUMMARY_ENTRIES, SUMMARY_CHARS = 512, 2_000_000


def summary_key(messages: list[Mapping[str, Any]]) -> str:
    blob = json.dumps([[m.get("role"), m.get("content"), m.get("tool_calls")] for m in messages],
                      sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def transcript(messages: list[Mapping[str, Any]], max_chars: int) -> str:
    """`role: content` lines; each message clipped (head and tail kept) when the whole is over max_chars."""
    lines = []
    for m in messages:
        text = m.get("content") or ""
        if m.get("tool_calls"):
            text += " " + json.dumps([c.get("function") for c in m["tool_calls"]], default=str)
        lines.append((m.get("role") or "?", text.strip()))
    per = max(40, max_chars // max(1, len(lines)))
    clipped = [(r, t if len(t) <= per else t[: per // 2] + " ... " + t[-per // 2:]) for r, t in lines]
    return "\n".join(f"{role}: {text}" for role, text in clipped)


def with_summary(messages: list[Mapping[str, Any]], summary: str) -> list[Mapping[str, Any]]:
    """The summary appended to the first system message, or in a new one at the start."""
    note = PREFIX + summary.strip()
    if messages and messages[0].get("role") in ("system", "developer"):
        first = messages[0]
        return [{**first, "content": f"{first.get('content') or ''}\n\n{note}"}, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]
