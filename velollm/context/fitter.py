"""ContextFitter: a chat's prompt made to fit its context the way the overflow mode says.

`error` leaves the messages alone and raises OpenAI's context_length_exceeded when they do not fit;
`truncate` drops the oldest turns (velollm.context.turns says which ones may go); `compress` first
applies the compressor's lossless steps (and, with a token classifier, compresses the oldest long
messages), then truncates what still does not fit (the serving layer then
summarises what was dropped). Prompts are encoded through the
TurnCache, so the ids of earlier turns are the ones the engine already holds.

With a `num_keep` (the Ollama API), a prompt that still does not fit once every turn that may go is gone (the
system prompt and the last user message alone are too long) is not an error: when it leaves no room for an
answer in the context, its tokens are cut as Ollama's runner cuts them (velollm.context.token_cut), down to
the budget, so that the room for the answer stays (Ollama fills the context and shifts it while generating;
VeloLLM does not shift). Within the context it runs as it is, its answer clamped to the room left.

With Ollama's `shift: false` nothing stands in for the shift: the budget is the whole context (the caller
keeps no reserve), a prompt of exactly the context runs as it is (Ollama's runner samples one token, then
ends the sequence with done_reason "length"), and only a longer one is cut, down to the context.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from velollm.context.fit_plan import FitPlan
from velollm.context.report import ContextReport
from velollm.context.segment_encoder import SegmentEncoder
from velollm.context.summary import with_summary
from velollm.context.text_ends import cut_text
from velollm.context.token_cut import TokenCut, answer_room, cut_prompt, shift_prompt
from velollm.context.truncation import stable_target, truncate
from velollm.context.turn_cache import Encoded, TurnCache
from velollm.context.turns import Turns
from velollm.errors import ContextOverflow

Render = Callable[[list[Mapping[str, Any]]], str]  # messages -> the prompt text (the chat template)
TOO_LONG = 1 << 62  # a text the tokenizer refuses by its length alone
# Truncation cuts in steps of budget / 4 tokens (truncation.stable_target): up to a quarter of the budget
# more than needed goes, and the next turns keep the same cut (and their prefix-cache hits).
STABLE_STEP_DIVISOR = 4


@dataclass(frozen=True)
class FittedPrompt:
    messages: list[Mapping[str, Any]]
    text: str
    token_ids: list[int]
    num_reused: int  # leading ids taken from an earlier turn (TurnCache)
    report: ContextReport | None  # None: the messages ran as sent
    summary: str | None = None  # the summary in the system prompt (compress)
    cut: TokenCut | None = None  # token_ids are `text`'s ids less this cut (Ollama's token-level truncation)

    def plan(self, context_len: int) -> FitPlan | None:
        """What was done, to do again on the conversation's next turn (None: nothing was done, or the prompt
        was cut at the token level: the kept messages alone are over the budget, so the plan cannot fit)."""
        if self.report is None or self.cut is not None:
            return None
        return FitPlan(self.report.mode, context_len, tuple(self.report.dropped_messages),
                       tuple(self.report.summarized_messages), self.summary, self.report.mode == "compress")


def output_reserve(context_len: int, max_tokens: int | None) -> int:
    """Room kept for the answer when truncating: the request's max_tokens, else min(1024, 1/8 of the
    context); at most half the context, at least one token."""
    wanted = max_tokens if max_tokens is not None else min(1024, context_len // 8)
    return max(1, min(wanted, context_len // 2))


class ContextFitter:
    def __init__(self, render: Render, tokenizer: Any, turn_cache: TurnCache | None = None) -> None:
        self.render = render
        self.tokenizer = tokenizer
        self.turn_cache = turn_cache
        # Prompts tokenized per template segment, each distinct one once: the prompts a fitting compares
        # share almost all of them (velollm.context.segment_encoder).
        self.segments = SegmentEncoder.of(tokenizer)
        self._encoded: dict[int, tuple[str, Encoded]] = {}  # by number of messages: truncation re-counts
        # Every prompt counted for this request, by its messages (the objects: truncation's lists share
        # them) and by its text: the compression steps, a second fit with more room (the summary's) and
        # the summary's report come back to the same prompts.
        self._counted: dict[tuple[int, ...], tuple[list[Mapping[str, Any]], str, Encoded]] = {}
        self._by_text: dict[str, Encoded] = {}
        # Each prompt rendered once, by its messages (kept, so their ids stay theirs): a prompt too long to
        # tokenize is counted again by each step of the fitting (truncation, the cut from its ends), and with
        # many tools one render takes a good part of a second.
        self._rendered: dict[tuple[int, ...], tuple[list[Mapping[str, Any]], str]] = {}
        self._too_long: dict[tuple[int, ...], list[Mapping[str, Any]]] = {}  # prompts the tokenizer refused

    def _render(self, messages: list[Mapping[str, Any]]) -> str:
        key = tuple(map(id, messages))
        hit = self._rendered.get(key)
        if hit is None:
            hit = self._rendered[key] = (messages, self.render(messages))
        return hit[1]

    def encode(self, messages: list[Mapping[str, Any]]) -> tuple[str, Encoded]:
        text = self._render(messages)
        encoded = self._by_text.get(text)
        if encoded is None:
            encoder = self.segments or self.tokenizer
            if self.turn_cache is not None:
                encoded = self.turn_cache.encode(encoder, text)
            else:
                encoded = Encoded(encoder.encode(text, add_special_tokens=False), 0)
            self._by_text[text] = encoded
        return text, encoded

    def count(self, messages: list[Mapping[str, Any]]) -> int:
        """Tokens of the rendered messages. Each counted prompt is remembered, so the next turn's count of
        the same history (raw, compressed or truncated alike) tokenizes only what is new."""
        key = tuple(map(id, messages))
        hit = self._counted.get(key)
        if hit is None:
            if key in self._too_long:
                self._encoded.pop(len(messages), None)
                return TOO_LONG
            try:
                text, encoded = self.encode(messages)
            except ContextOverflow:
                self._encoded.pop(len(messages), None)  # not another prompt's ids for these messages
                self._too_long[key] = messages
                return TOO_LONG
            if self.turn_cache is not None and encoded.num_reused < len(encoded.token_ids):
                self.turn_cache.remember(text, encoded.token_ids)
            hit = self._counted[key] = (messages, text, encoded)  # the messages kept: their ids stay theirs
        self._encoded[len(messages)] = hit[1], hit[2]
        return len(hit[2].token_ids)

    def fit(self, messages: list[Mapping[str, Any]], mode: str, context_len: int, reserve: int,
            compressor: Any = None, num_keep: int | None = None, shift: bool = True) -> FittedPrompt:
        """The prompt for `messages` within `context_len - reserve` tokens (error mode: within the context
        less one token, as the request's max_tokens is clamped to what remains). With `num_keep` (Ollama's
        option), what dropping turns cannot fit is cut at the token level instead of a ContextOverflow (see
        the module's docstring), and in the error mode a prompt of exactly the context runs shifted, as
        Ollama's runner shifts it (`_shifted`), or as it is without `shift`."""
        self._encoded.clear()
        if mode == "error":
            text, encoded = self.encode(messages)
            if num_keep is not None and len(encoded.token_ids) == context_len:  # Ollama runs it
                if not shift:
                    return FittedPrompt(messages, text, encoded.token_ids, encoded.num_reused, None)
                return self._shifted(messages, text, encoded, context_len, num_keep)
            if len(encoded.token_ids) >= context_len:
                raise ContextOverflow(f"This model's maximum context length is {context_len} tokens. However, "
                                      f"your messages resulted in {len(encoded.token_ids)} tokens. Please reduce "
                                      f"the length of the messages.", param="messages")
            return FittedPrompt(messages, text, encoded.token_ids, encoded.num_reused, None)
        budget = context_len - reserve
        num_original = self.count(messages)
        if num_original <= budget:
            text, encoded = self._encoded[len(messages)]
            return FittedPrompt(messages, text, encoded.token_ids, encoded.num_reused, None)
        report = ContextReport(mode, num_original, num_original)
        current = messages
        if compressor is not None:
            current = compressor.compress(current, self.count, report, budget)
        if self.count(current) > budget:
            t0 = time.perf_counter()
            current = self._truncate(messages, current, compressor, budget, context_len, report, num_keep is not None)
            report.step_seconds["truncate"] = time.perf_counter() - t0
        try:
            text, encoded = self._encoded.get(len(current)) or self.encode(current)
        except ContextOverflow:  # what is left is too long to tokenize
            if num_keep is None:
                raise
            return self._cut_long(messages, current, report, budget, context_len, num_keep)
        ids, num_reused, cut = encoded.token_ids, encoded.num_reused, None
        if num_keep is not None and len(ids) >= answer_room(context_len, shift):  # no room for an answer: Ollama's cut
            ids, cut = cut_prompt(ids, budget, num_keep, context_len)
        if cut is not None:
            num_reused = min(num_reused, cut.keep)
            report.cut_tokens = (cut.keep, cut.end)
        report.num_prompt_tokens = len(ids)
        if not report.changed:  # over the budget, but nothing could go, and it has room in the context
            return FittedPrompt(current, text, ids, num_reused, None)
        return FittedPrompt(current, text, ids, num_reused, report, cut=cut)

    def _cut_long(self, messages: list[Mapping[str, Any]], current: list[Mapping[str, Any]], report: ContextReport,
                  budget: int, context_len: int, num_keep: int) -> FittedPrompt:
        """Kept messages too long to tokenize (surely over the context), on the Ollama API: cut as any prompt
        that leaves no room, from the ids of the text's ends (velollm.context.text_ends: never tokenized
        whole). The sizes in the report are estimated from those ids."""
        text = self._render(current)
        ids, cut, num_ids = cut_text(self.tokenizer, text, budget, num_keep, add_special_tokens=False,
                                     context_len=context_len)
        if report.num_original_tokens == TOO_LONG:  # the whole conversation, at the kept text's ids per character
            report.num_original_tokens = max(num_ids, round(num_ids * len(self._render(messages)) / len(text)))
        report.num_prompt_tokens = len(ids)
        report.cut_tokens = (cut.keep, cut.end) if cut is not None else None
        return FittedPrompt(current, text, ids, 0, report, cut=cut)

    def _shifted(self, messages: list[Mapping[str, Any]], text: str, encoded: Encoded, context_len: int,
                 num_keep: int) -> FittedPrompt:
        """A prompt of exactly the context in the error mode (`truncate: false`) on the Ollama API: Ollama
        runs it and shifts its context (velollm.context.token_cut.shift_prompt), so it is shifted here."""
        ids, shift = shift_prompt(encoded.token_ids, context_len, num_keep)
        assert shift is not None
        report = ContextReport("error", len(encoded.token_ids), len(ids), cut_tokens=(shift.keep, shift.end))
        return FittedPrompt(messages, text, ids, min(encoded.num_reused, shift.keep), report, cut=shift)

    def reuse(self, messages: list[Mapping[str, Any]], plan: FitPlan, context_len: int, reserve: int,
              compressor: Any = None) -> FittedPrompt | None:
        """`plan` (made for a prefix of `messages`) applied to `messages`: one render and one count of the
        kept messages, and one of the whole (the report's original size; the TurnCache has the history's
        ids, so only what is new is tokenized). None when the result does not fit (fit again) or when the
        messages now fit as sent (the plan is not needed)."""
        t0 = time.perf_counter()
        self._encoded.clear()
        budget = context_len - reserve
        num_original = self.count(messages)
        if num_original <= budget:
            return None
        removed = plan.removed
        kept = [m for i, m in enumerate(messages) if i not in removed]
        if plan.compressed and compressor is not None:
            kept = compressor.apply(kept)
        if plan.summary is not None:
            kept = with_summary(kept, plan.summary)
        if self.count(kept) > budget:
            return None
        text, encoded = self._encoded[len(kept)]
        report = ContextReport(plan.mode, num_original, len(encoded.token_ids), list(plan.dropped),
                               list(plan.summarized), step_seconds={"reuse": time.perf_counter() - t0})
        return FittedPrompt(kept, text, encoded.token_ids, encoded.num_reused, report, plan.summary)

    def _truncate(self, original: list[Mapping[str, Any]], current: list[Mapping[str, Any]], compressor: Any,
                  budget: int, context_len: int, report: ContextReport,
                  over_budget: bool = False) -> list[Mapping[str, Any]]:
        """Drops the oldest turns of `current` (compressed: one message per original message, same indices).
        The kept originals are compressed again, so no reference points to a dropped message; a kept copy
        that thereby grows back can cost another turn. With `over_budget`, a kept part over the budget is
        returned (truncation.truncate) rather than a ContextOverflow."""
        dropped: set[int] = set()
        while True:
            turns = Turns.of(current)
            target = stable_target(self.count(current), budget, budget // STABLE_STEP_DIVISOR)
            cut = truncate(turns, self.count, budget, context_len, target, over_budget)
            index = [i for i in range(len(original)) if i not in dropped]
            dropped |= {index[i] for i in cut.dropped}
            if compressor is None:
                report.dropped_messages = sorted(dropped)
                return cut.messages
            current = compressor.apply([m for i, m in enumerate(original) if i not in dropped])
            if self.count(current) <= budget or not cut.dropped:  # fits, or nothing more may go
                report.dropped_messages = sorted(dropped)
                return current

