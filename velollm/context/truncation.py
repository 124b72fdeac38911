"""Truncation: the fewest oldest turns dropped so that a chat fits its token budget."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from velollm.context.turns import Turns
from velollm.errors import ContextOverflow

Count = Callable[[list[Mapping[str, Any]]], int]  # tokens of the rendered prompt of these messages


@dataclass(frozen=True)
class Truncation:
    messages: list[Mapping[str, Any]]
    dropped: list[int]  # indices into the original messages
    num_tokens: int


def stable_target(num_tokens: int, budget: int, step: int) -> int:
    """The size to cut a `num_tokens` prompt down to: `budget`, less what rounds the cut up to a multiple
    of `step` tokens. The oldest turns' tokens do not change as a chat grows, so the turns that cover the
    same multiple are the same turns: the cut, and with it the prompt's prefix and its prefix-cache hits,
    stays put for `step` tokens of new conversation instead of moving every turn."""
    if step <= 0 or num_tokens <= budget:
        return budget
    multiples = -(-(num_tokens - budget) // step)
    return num_tokens - multiples * step


def truncate(turns: Turns, count: Count, budget: int, context_len: int, target: int | None = None) -> Truncation:
    """Drops the fewest oldest units for the prompt to have at most `target` tokens (binary search: a
    prompt never grows when a unit goes), or, when no cut reaches `target`, at most `budget`.
    ContextOverflow when even the kept part (system messages, the last user message and what follows
    it) does not fit the budget."""
    lo, hi = 1, len(turns.units)
    kept, dropped = turns.without(hi)
    num_kept = count(kept)
    if num_kept > budget:
        raise ContextOverflow(f"This model's maximum context length is {context_len} tokens. Even with the "
                              f"{len(dropped)} oldest messages dropped (the system prompt and the last user "
                              f"message are always kept), the messages have {num_kept} tokens, more than the "
                              f"{budget} the prompt may use. Please reduce the length of the messages.",
                              param="messages")
    best = Truncation(kept, dropped, num_kept)
    goal = target if target is not None and num_kept <= target else budget
    hi -= 1
    while lo <= hi:
        mid = (lo + hi) // 2
        messages, dropped = turns.without(mid)
        num = count(messages)
        if num <= goal:
            best, hi = Truncation(messages, dropped, num), mid - 1
        else:
            lo = mid + 1
    return best
