"""Truncation: the fewest oldest turns dropped so that a chat fits its token budget."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from velollm.context.turns import Turns
from velollm.errors import ContextOverflow

FRAMING_CHARS = 16  # a template's role header and end-of-turn marker, roughly
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


def truncate(turns: Turns, count: Count, budget: int, context_len: int, target: int | None = None,
             over_budget: bool = False) -> Truncation:
    """Drops the fewest oldest units for the prompt to have at most `target` tokens, or, when no cut reaches
    `target`, at most `budget`. When even the kept part (system messages, the last user message and what
    follows it) does not fit the budget: ContextOverflow, or with `over_budget` that kept part (every unit
    dropped; the caller cuts its tokens, as Ollama does).

    A prompt never grows when a unit goes, so the cut is the end of a range that each exact count narrows
    (bisection). The first count is where the units' sizes in characters, scaled to tokens by the whole
    prompt's count, put the cut, and the second is its neighbour on the other side of the goal: when the
    estimate is right, those two settle the cut instead of one count per halving, and when it is not,
    bisection goes on in what is left of the range. Every count is exact, so the cut is the one that
    bisection alone finds."""
    n = len(turns.units)
    kept, dropped = turns.without(n)
    num_kept = count(kept)
    if num_kept > budget:
        if over_budget:
            return Truncation(kept, dropped, num_kept)
        # No "messages" as a subject or after a count: the Responses API says "input" for it (in_responses_terms)
        cut = f" with the {len(dropped)} oldest turns dropped" if dropped else ""
        raise ContextOverflow(f"This model's maximum context length is {context_len} tokens. What truncation keeps "
                              f"(the system prompt and the last user message are always kept) comes to {num_kept} "
                              f"tokens{cut}, more than the {budget} the prompt may use. Please reduce the length of "
                              f"the messages.", param="messages")
    best = Truncation(kept, dropped, num_kept)
    goal = target if target is not None and num_kept <= target else budget
    lo, hi = 1, n - 1  # the cut is in [lo, hi + 1], and hi + 1 fits
    guess = _estimated_cut(turns, count(list(turns.messages)), num_kept, goal) if lo < hi else None
    follow = True
    while lo <= hi:
        mid = min(max(guess, lo), hi) if guess is not None else (lo + hi) // 2
        messages, dropped = turns.without(mid)
        num = count(messages)
        if num <= goal:
            best, hi = Truncation(messages, dropped, num), mid - 1
        else:
            lo = mid + 1
        guess = (mid - 1 if num <= goal else mid + 1) if guess is not None and follow else None
        follow = False
    return best


def _size(message: Mapping[str, Any]) -> int:
    """Characters the message puts in the prompt, roughly (its content, its tool calls, the template's
    framing)."""
    content = message.get("content")
    size = len(content) if isinstance(content, str) else len(json.dumps(content, default=str)) if content else 0
    if message.get("tool_calls"):
        size += len(json.dumps(message["tool_calls"], default=str))
    return size + FRAMING_CHARS


def _estimated_cut(turns: Turns, num_all: int, num_kept: int, goal: int) -> int | None:
    """The fewest units whose going leaves an estimated prompt within `goal`: each unit's tokens taken as
    its share, by characters, of what all the units add to the prompt."""
    sizes = [sum(_size(turns.messages[i]) for i in unit) for unit in turns.units]
    total = sum(sizes)
    if total <= 0 or num_all <= num_kept:
        return None
    per_char = (num_all - num_kept) / total
    remaining = float(num_all)
    for k, size in enumerate(sizes, start=1):  # remaining: the estimate with k units gone
        remaining -= size * per_char
        if remaining <= goal:
            return k
    return len(sizes)
