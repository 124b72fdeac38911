"""TokenCut: Ollama's truncation of a prompt's tokens, for a prompt that dropping turns cannot make fit.

Ollama's runner (runner/ollamarunner/runner.go, NewSequence) cuts a prompt longer than the context at the
token level: a negative `num_keep` means all of the prompt, `num_keep` is clamped to `num_ctx - 1` (one id
always goes), and the ids `[num_keep, num_keep + len - num_ctx)` are discarded, so the first `num_keep` ids
and the tail stay, exactly `num_ctx` of them ("truncating input prompt" in its log). Ollama then relies on
shifting the context during generation (`ollama_shift`, also for a prompt that fills the context with
`truncate: false`); VeloLLM has no context shift, so its callers cut to the context
less the room kept for the answer (`limit` here), and the formula is the same with `limit` for `num_ctx`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenCut:
    keep: int  # leading ids kept (num_keep as clamped)
    end: int  # ids [keep, end) go; the ids from `end` on stay

    @property
    def num_cut(self) -> int:
        return self.end - self.keep

    def apply(self, ids: Sequence[int]) -> list[int]:
        return list(ids[: self.keep]) + list(ids[self.end:])


def answer_room(context_len: int, shift: bool) -> int:
    """The most ids of prompt and answer together in a context of `context_len`: a prompt of this many ids or
    more leaves no room for an answer. With Ollama's `shift: false` that is one more than the context: its
    runner samples one token after a prompt that fills the context (the last token never enters its cache),
    then ends the sequence with done_reason "length"."""
    return context_len if shift else context_len + 1


def ollama_cut(num_ids: int, limit: int, num_keep: int) -> TokenCut | None:
    """The cut of a `num_ids` prompt down to `limit` ids (None when it has no more than that)."""
    if limit < 1:
        raise ValueError(f"a prompt cannot be cut to {limit} tokens")
    if num_ids <= limit:
        return None
    keep = num_ids if num_keep < 0 else num_keep
    keep = min(keep, limit - 1)
    return TokenCut(keep, keep + num_ids - limit)


def ollama_shift(num_ids: int, num_ctx: int, num_keep: int) -> TokenCut | None:
    """Ollama's context shift for a prompt that fills its context (`truncate: false` lets a prompt of exactly
    `num_ctx` ids run: its check is `len(inputs) > numCtx`), None for one with room left. Ollama's runner
    samples one token and then, the context full, discards ids after the first `num_keep` (clamped to
    `num_ctx - 1`, as its sequence does): half of the rest, at least one (kvcache ShiftDiscard). VeloLLM
    has no context shift, so its callers apply it before the first token, which then has that room."""
    if num_ids < num_ctx:
        return None
    if num_ids > num_ctx:
        raise ValueError(f"a prompt of {num_ids} ids is over its context ({num_ctx}): Ollama refuses it")
    keep = min(num_ids if num_keep < 0 else num_keep, num_ctx - 1)
    return TokenCut(keep, keep + max((num_ctx - keep) // 2, 1))


def cut_prompt(ids: Sequence[int], budget: int, num_keep: int, context_len: int) -> tuple[list[int], TokenCut | None]:
    """`ids` cut as Ollama's runner cuts them, down to `budget` ids (at least one), and the cut (None, and the
    ids as they are, when they fit); a cut is logged as Ollama logs it."""
    cut = ollama_cut(len(ids), max(1, budget), num_keep)
    if cut is None:
        return list(ids), None
    cut_ids = cut.apply(ids)
    logger.warning("truncating input prompt: limit=%d prompt=%d keep=%d new=%d (context %d)", budget, len(ids),
                   cut.keep, len(cut_ids), context_len)
    return cut_ids, cut


def shift_prompt(ids: Sequence[int], num_ctx: int, num_keep: int) -> tuple[list[int], TokenCut | None]:
    """`ids` shifted as Ollama's runner shifts a full context (`ollama_shift`), and the shift (None, and the
    ids as they are, when they leave room); a shift is logged."""
    shift = ollama_shift(len(ids), num_ctx, num_keep)
    if shift is None:
        return list(ids), None
    logger.info("shifting the context of a prompt that fills it: keep=%d discard=%d (context %d)",
                shift.keep, shift.num_cut, num_ctx)
    return shift.apply(ids), shift
