"""IdWindow: a prompt of token ids made to fit its context (Ollama's /api/generate with `context`).

The ids have no messages to drop, so, as Ollama's runner does, the oldest ids after the first `num_keep`
go; the new prompt (the ids after the `context`) never does. The cut is rounded to steps of a quarter of
the budget (truncation.stable_target): the next call's `context` is this one's whole prompt and answer,
so the same ids are cut until the conversation grows by a step, and the prompt keeps its prefix (and its
prefix-cache hits) in between.
"""

from __future__ import annotations

from dataclasses import dataclass

from velollm.context.fitter import STABLE_STEP_DIVISOR
from velollm.context.truncation import stable_target


@dataclass(frozen=True)
class IdWindow:
    token_ids: list[int]  # the ids that run
    start: int  # ids [start, end) of the full prompt were dropped
    end: int


def fit_ids(ids: list[int], num_new: int, num_keep: int, budget: int) -> IdWindow | None:
    """None when `ids` fit `budget` or nothing may go; else the window without the oldest ids after the
    first `num_keep`. The last `num_new` ids (the new prompt) never go: when they alone are over the budget,
    the whole context goes and what is left runs as a prompt without `context` would (its answer clamped to
    the room left, or the 400 when none is)."""
    n = len(ids)
    keep = max(0, min(num_keep, n - num_new))
    drop = min(n - stable_target(n, budget, budget // STABLE_STEP_DIVISOR), n - num_new - keep)
    if n <= budget or drop <= 0:
        return None
    return IdWindow(ids[:keep] + ids[keep + drop:], keep, keep + drop)
