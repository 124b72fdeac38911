"""Whitespace runs: trailing spaces, runs of blank lines, and runs of spaces inside a line (not the
indentation that starts one, which code needs) shrink to one. JSON tool results are left to json_minify
(spaces inside their strings are values), and the assistant's answers stay as the model wrote them: the
engine holds their generated ids (TurnCache), which a rewritten answer would no longer match.
Each content is squeezed once: a chat sends the same history every turn."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from velollm.context.text_memo import TextMemo

_TRAILING = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")
_INNER_RUNS = re.compile(r"(?<=\S)[ \t]{2,}(?=\S)")


_MEMO = TextMemo(max_entries=1024, max_chars=8 << 20)  # contents are the client's: bounded in characters too


def squeeze(text: str) -> str:
    return _MEMO.memoised(_squeeze, text)


def _squeeze(text: str) -> str:
    return _BLANK_LINES.sub("\n\n", _INNER_RUNS.sub(" ", _TRAILING.sub("", text)))


def squeeze_whitespace(messages: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for message in messages:
        content = message.get("content")
        role = message.get("role")
        if isinstance(content, str) and role != "assistant" and not (role == "tool" and content[:1] in "[{"):
            squeezed = squeeze(content)
            if squeezed != content:
                message = {**message, "content": squeezed}
        out.append(message)
    return out
