"""next_turn_prefix: the text a chat's next prompt will start with, rendered as soon as an answer ends.

The next turn renders the previous answer as the client sends it back, and templates rewrite it: Llama 3
trims it (`content | trim`), Qwen3 drops the `<think>` part of earlier answers and renders the last
assistant turn otherwise than earlier ones. The remembered prompt + answer (TurnCache) is then no prefix
of the next prompt and the answer would be prefilled again at the user's next turn. Rendering the
conversation with the answer and a placeholder turn after it gives the text the next prompt starts
with; it is cut where a user turn and a system turn in that place diverge (the header's role differs),
then back to the end of a special token: the template's own tokens split the text, so the ids of what
comes before them never depend on what comes after (the next user message's first characters). A template
that renders the answer itself otherwise before a system turn (Qwen3 keeps the thinking of an answer after
the last user query) diverges before the header: then the cut is before the placeholder user turn's text,
back to a special token (the user header included: the next message after an answer without tool calls is the user's).
After an answer with tool calls the next message is the first call's result (`follow`, a tool turn), which
templates render in a header of its own (Qwen3's `<|im_start|>user\n<tool_response>`) or as a turn of its role.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection, Mapping
from typing import Any

logger = logging.getLogger(__name__)

Render = Callable[[list[Mapping[str, Any]]], str]
TAIL_CHARS = 256  # how far back from the cut a special token is looked for


def next_turn_prefix(render: Render, messages: list[Mapping[str, Any]], answer: Mapping[str, Any],
                     special_texts: Collection[str], covered: str = "",
                     follow: Mapping[str, Any] | None = None) -> str | None:
    """The start of the prompt of the turn after `answer`, or None when the template cannot tell it (it
    refuses a system turn after an answer, or drops the placeholder) or when `covered` (the remembered
    prompt + answer: the engine holds its blocks) holds the start already or starts with it. A `covered`
    that the first rendering starts with is one of those, so it is checked before the second rendering.
    `follow`: the next message but its content (a user's, unless the answer called tools)."""
    marker = f"VELOLLM{uuid.uuid4().hex}"
    try:
        as_user = render([*messages, answer, {**(follow or {"role": "user"}), "content": marker}])
        if covered and as_user.startswith(covered):
            return None
        as_system = render([*messages, answer, {"role": "system", "content": marker}])
    except Exception as e:  # noqa: BLE001 (a template's own refusal: jinja raise_exception, a missing key)
        logger.debug("next turn not rendered: %s", e)
        return None
    end = as_user.find(marker)
    if end < 0:
        return None
    common = _common_prefix(as_user, as_system)
    between = as_user[common:end]
    # The roles diverge in the header when at most one special token (Llama 3's <|end_header_id|>) lies between
    # there and the marker; the answer's end-of-turn token and the next header's start make two or more.
    if sum(between.count(t) for t in special_texts if t) <= 1:
        end = common
    text = _after_special(as_user[:end], special_texts)
    return None if text is None or (covered and covered.startswith(text)) else text


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    lo, hi = 0, n  # binary search on equal prefixes: O(n) compares in C rather than a Python loop
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _after_special(text: str, special_texts: Collection[str]) -> str | None:
    """`text` cut after the last special token of its tail (None when there is none there)."""
    tail_start = max(0, len(text) - TAIL_CHARS)
    tail = text[tail_start:]
    best = -1
    for special in special_texts:
        if special and (i := tail.rfind(special)) >= 0:
            best = max(best, i + len(special))
    return text[:tail_start + best] if best >= 0 else None
