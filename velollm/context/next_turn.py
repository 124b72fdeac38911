"""next_turn_prefix: the text a chat's next prompt will start with, rendered as soon as an answer ends.

The next turn renders the previous answer as the client sends it back, and templates rewrite it: Llama 3
trims it (`content | trim`), Qwen3 drops the `<think>` part of earlier answers and renders the last
assistant turn otherwise than earlier ones. The remembered prompt + answer (TurnCache) is then no prefix
of the next prompt and the answer would be prefilled again at the user's next turn. Rendering the
conversation with the answer and a placeholder turn after it gives the text the next prompt starts
with; it is cut where a user turn and a system turn in that place diverge (the header's role differs),
then back to the end of a special token: the template's own tokens split the text, so the ids of what
comes before them never depend on what comes after (the next user message's first characters).
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
                     special_texts: Collection[str]) -> str | None:
    """The start of the prompt of the turn after `answer`, or None when the template cannot tell it (it
    refuses a system turn after an answer, or drops the placeholder)."""
    marker = f"VELOLLM{uuid.uuid4().hex}"
    try:
        as_user = render([*messages, answer, {"role": "user", "content": marker}])
        as_system = render([*messages, answer, {"role": "system", "content": marker}])
    except Exception as e:  # noqa: BLE001 (a template's own refusal: jinja raise_exception, a missing key)
        logger.debug("next turn not rendered: %s", e)
        return None
    end = as_user.find(marker)
    if end < 0:
        return None
    end = min(end, _common_prefix(as_user, as_system))
    return _after_special(as_user[:end], special_texts)


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
