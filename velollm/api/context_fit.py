"""Context management for the chat handlers: the prompt fitted to its context (velollm.context), the
x-velollm-context header, the metrics (the finished turn is remembered for the next one by
velollm.api.turn_prefill)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from velollm.api.remembering import Remembering
from velollm.api.summarizer import ModelSummarizer
from velollm.context.compressor import Compressor
from velollm.context.fit_plan import PlanCache, prefix_digests
from velollm.context.fitter import ContextFitter, FittedPrompt, Render, output_reserve
from velollm.context.id_window import fit_ids
from velollm.context.lingua_step import token_counter
from velollm.context.metrics import ContextMetrics
from velollm.context.overflow import resolve_overflow
from velollm.context.report import HEADER, ContextReport
from velollm.context.summary import SUMMARY_CHARS, SUMMARY_ENTRIES, with_summary
from velollm.context.text_ends import cut_text
from velollm.context.text_memo import TextMemo
from velollm.context.token_cut import answer_room, cut_prompt, shift_prompt
from velollm.context.turn_cache import TurnCache
from velollm.context.turns import Turns
from velollm.errors import ContextOverflow

if TYPE_CHECKING:
    from velollm.api.handler import AppState
    from velollm.api.served_model import ServedModel
    from velollm.context.lingua_step import LinguaStep

logger = logging.getLogger(__name__)
_LOCK = threading.Lock()
T = TypeVar("T")
Messages = list[Mapping[str, Any]]


# Ollama's runner (errorInputTooLong), with `truncate: false`, for a prompt longer than the context
OLLAMA_INPUT_TOO_LONG = "the input length exceeds the context length"
MAX_MODELS = 16  # models whose caches are kept (least recently used dropped): on-demand models come and go


def _recent(table: OrderedDict[str, T], model: str, make: Callable[[], T]) -> T:
    """`model`'s entry of a per-model table, made on first use; the least recently used model's goes
    beyond MAX_MODELS (a TurnCache alone may hold 32 MiB of ids)."""
    with _LOCK:
        entry = table.get(model)
        if entry is None:
            entry = table[model] = make()
        table.move_to_end(model)
        while len(table) > MAX_MODELS:
            table.popitem(last=False)
        return entry


@dataclass
class ContextState:
    """Per app: the counters, and each recent model's remembered turns, summaries and fit plans."""

    metrics: ContextMetrics
    lingua: LinguaStep | None = None  # --context-compressor's classifier step (compress mode)
    turn_caches: OrderedDict[str, TurnCache] = field(default_factory=OrderedDict)
    summaries: OrderedDict[str, TextMemo] = field(default_factory=OrderedDict)
    plans: OrderedDict[str, PlanCache] = field(default_factory=OrderedDict)
    background: set[asyncio.Task[None]] = field(default_factory=set)  # next-turn prefills being prepared
    remembering: Remembering = field(default_factory=Remembering)  # finished turns being remembered

    def plan_cache(self, model: str) -> PlanCache:
        return _recent(self.plans, model, PlanCache)

    def turn_cache(self, model: str) -> TurnCache:
        return _recent(self.turn_caches, model, TurnCache)

    def summary_cache(self, model: str) -> TextMemo:
        return _recent(self.summaries, model, lambda: TextMemo(SUMMARY_ENTRIES, SUMMARY_CHARS))


def context_state(state: AppState) -> ContextState:
    """The app's ContextState, made on first use."""
    with _LOCK:
        if state.context is None:
            lingua = _lingua(state.config.context_compressor, state.config.context_compressor_device)
            state.context = ContextState(ContextMetrics(state.metrics.registry), lingua)
        return state.context


def _lingua(path: str | None, device: str) -> LinguaStep | None:
    """The classifier step of --context-compressor (its folder was checked at start; loaded on first use)."""
    if path is None:
        return None
    from velollm.context.lingua_step import LinguaStep
    from velollm.embed.token_classifier import ClassifierFolder
    from velollm.errors import VeloLLMError

    try:
        return LinguaStep.of_folder(ClassifierFolder.inspect(path), device)
    except (VeloLLMError, OSError) as e:  # gone since the start: chats go on without the step
        logger.error("--context-compressor %s: %s; compress goes on without it", path, e)
        return None


async def fit_chat(state: AppState, served: ServedModel, messages: Messages, render: Render,
                   *, api: str, requested: str | None, context_len: int, max_tokens: int | None,
                   num_keep: int = 4, shift: bool = True, counting: bool = False) -> FittedPrompt:
    """The prompt that runs for `messages`: per the request's overflow mode, else the server's, else the
    API's default (error on /v1, truncate on /api). With prefetch on, the plan that fitted the
    conversation's previous turn is applied again while its result fits (same cut, same summary, so the
    prompt starts with the previous prompt and answer); the conversation is fitted afresh otherwise.

    On /api, what dropping turns cannot fit is cut at the token level as Ollama's runner cuts it (the first
    `num_keep` ids and the tail: ContextFitter), and a context overflow says so in Ollama's words; without
    `shift` (Ollama's `shift: false`) no room is kept for the answer (answer_reserve). /v1 keeps OpenAI's
    context_length_exceeded (OpenAI never cuts a message).

    `counting`: the prompt is fitted only to be counted (/v1/responses/input_tokens), so the overflow metrics
    and the fit plans are left as they are; a summary it needs is made and cached as a create's is, so the
    create that follows the count finds it and does not summarise again."""
    try:
        return await _fit_chat(state, served, messages, render, api=api, requested=requested,
                               context_len=context_len, max_tokens=max_tokens,
                               num_keep=num_keep if api == "ollama" else None, shift=shift, counting=counting)
    except ContextOverflow as e:
        if api != "ollama":
            raise
        raise ollama_overflow(e) from None


def answer_reserve(context_len: int, max_tokens: int | None, shift: bool) -> int:
    """Room kept for the answer when a prompt is cut (fitter.output_reserve), as VeloLLM's stand-in for
    Ollama's context shift; none with `shift: false`, where Ollama fits the prompt to the whole context and
    ends the answer when the context is full."""
    return output_reserve(context_len, max_tokens) if shift else 0


def ollama_overflow(e: ContextOverflow) -> ContextOverflow:
    """Ollama's runner error for a prompt over the context with `truncate: false` (HTTP 400), the detail
    after it."""
    return ContextOverflow(f"{OLLAMA_INPUT_TOO_LONG} ({e})", param=e.param)


async def _fit_chat(state: AppState, served: ServedModel, messages: Messages, render: Render,
                    *, api: str, requested: str | None, context_len: int, max_tokens: int | None,
                    num_keep: int | None, shift: bool, counting: bool) -> FittedPrompt:
    ctx = context_state(state)
    mode = resolve_overflow(requested, state.config.context_overflow, api)  # type: ignore[arg-type]
    turns = ctx.turn_cache(served.name) if state.config.prefetch else None
    if turns is not None:
        await ctx.remembering.settled(served.name)  # the conversation's previous turn, if it just ended
    fitter = ContextFitter(render, served.engine.tokenizer, turns)
    reserve = answer_reserve(context_len, max_tokens, shift)
    compressor = None
    if mode == "compress":
        compressor = Compressor(lingua=ctx.lingua, count_text=token_counter(served.engine.tokenizer),
                                namespace=served.name)
    plans = ctx.plan_cache(served.name) if state.config.prefetch and mode != "error" else None
    digests = prefix_digests(messages) if plans is not None else []
    plan = plans.longest(digests, mode, context_len) if plans is not None else None
    fitted = None
    if plan is not None:
        fitted = await asyncio.to_thread(fitter.reuse, messages, plan, context_len, reserve, compressor)
    if fitted is None:
        fitted = await asyncio.to_thread(fitter.fit, messages, mode, context_len, reserve, compressor, num_keep,
                                         shift)
        if compressor is not None and fitted.report is not None and fitted.report.dropped_messages \
                and len(fitted.token_ids) <= context_len - reserve and fitted.cut is None:  # else no summary fits
            summarizer = ModelSummarizer(served.engine, ctx.summary_cache(served.name))
            fitted = await _summarize(fitter, summarizer, compressor, messages, fitted, context_len, reserve)
    if counting:
        return fitted
    if plans is not None and (made := fitted.plan(context_len)) is not None:
        plans.put(digests, made)
    ctx.metrics.observe(served.name, fitted.report, fitted.num_reused)
    return fitted


async def _summarize(fitter: ContextFitter, summarizer: ModelSummarizer, compressor: Compressor,
                     messages: Messages, fitted: FittedPrompt, context_len: int, reserve: int) -> FittedPrompt:
    """The oldest turns replaced by the model's summary of them, in the system prompt. A summary made
    earlier for as many turns or more is reused (the prompt then keeps its prefix, and the prefix cache
    hits); a new one covers the turns that leave a quarter of the budget free, so the next turns reuse
    it too. When no summary fits, the truncated prompt stands."""
    t0 = time.perf_counter()
    budget = context_len - reserve
    summary_tokens = max(16, min(256, budget // 8))
    units = Turns.of(messages).units
    gone = set(fitted.report.dropped_messages)  # type: ignore[union-attr]
    k_min = next((k for k, unit in enumerate(units) if not set(unit) <= gone), len(units))

    def older(k: int) -> Messages:
        return [messages[i] for unit in units[:k] for i in unit]

    def build(k: int, summary: str) -> FittedPrompt | None:
        summarized = {i for unit in units[:k] for i in unit}
        kept = with_summary(compressor.apply([m for i, m in enumerate(messages) if i not in summarized]), summary)
        text, encoded = fitter.encode(kept)
        if len(encoded.token_ids) > budget:
            return None
        full = fitter.count(compressor.apply(messages))
        report = dataclasses.replace(fitted.report, dropped_messages=[], summarized_messages=sorted(summarized),
                                     num_prompt_tokens=len(encoded.token_ids),
                                     saved_tokens={**fitted.report.saved_tokens,  # type: ignore[union-attr]
                                                   "summary": full - len(encoded.token_ids)},
                                     step_seconds={**fitted.report.step_seconds,  # type: ignore[union-attr]
                                                   "summary": time.perf_counter() - t0})
        return FittedPrompt(kept, text, encoded.token_ids, encoded.num_reused, report, summary)

    for k in range(max(1, k_min), len(units) + 1):
        summary = summarizer.cached(older(k))
        if summary is not None and (out := await asyncio.to_thread(build, k, summary)) is not None:
            return out
    k = k_min
    try:
        roomy = await asyncio.to_thread(fitter.fit, messages, "compress", context_len,
                                        reserve + budget // 4 + summary_tokens, compressor)
        if roomy.report is not None:
            gone = set(roomy.report.dropped_messages)
            k = next((j for j, unit in enumerate(units) if not set(unit) <= gone), len(units))
    except ContextOverflow:
        pass
    summary = await summarizer.summarize(older(k), context_len, summary_tokens)
    return await asyncio.to_thread(build, k, summary) or fitted


def fit_token_prompt(state: AppState, served: ServedModel, ids: list[int], num_new: int, *,
                     requested: str | None, context_len: int, max_tokens: int | None,
                     num_keep: int, shift: bool = True) -> tuple[list[int], ContextReport | None]:
    """/api/generate: a prompt whose `context` (the previous turns' ids) is over the budget loses its oldest
    ids after the first `num_keep` (velollm.context.id_window), as Ollama truncates; the last `num_new` ids
    (this call's prompt) do not go there. A prompt that still leaves no room for an answer in the context
    (this call's prompt alone too long) is cut as Ollama's runner cuts it, the first `num_keep` ids and the
    tail, down to the budget (velollm.context.token_cut; `cut_tokens` in the report); within the context
    it runs as it is, its answer clamped. In the error mode the prompt stays as it is (the 400 comes after),
    but for a prompt of exactly the context, which Ollama runs and shifts (token_cut.shift_prompt). Without
    `shift` no room is kept for the answer (answer_reserve) and a prompt of exactly the context runs as it is."""
    mode = resolve_overflow(requested, state.config.context_overflow, "ollama")  # type: ignore[arg-type]
    if mode == "error":  # as sent (the 400 comes after), but a prompt of exactly the context: Ollama runs it
        if len(ids) != context_len or not shift:
            return ids, None
        shifted, moved = shift_prompt(ids, context_len, num_keep)
        assert moved is not None
        return shifted, ContextReport(mode, len(ids), len(shifted), cut_tokens=(moved.keep, moved.end))
    budget = context_len - answer_reserve(context_len, max_tokens, shift)
    window = fit_ids(ids, num_new, num_keep if num_keep >= 0 else len(ids), budget)
    report = None
    if window is not None:
        report = ContextReport(mode, len(ids), len(window.token_ids), dropped_tokens=(window.start, window.end))
    if len(window.token_ids if window is not None else ids) >= answer_room(context_len, shift):
        cut_ids, cut = cut_prompt(ids, budget, num_keep, context_len)
        assert cut is not None
        window, report = None, ContextReport(mode, len(ids), len(cut_ids), cut_tokens=(cut.keep, cut.end))
        ids = cut_ids
    if report is None:
        return ids, None
    context_state(state).metrics.observe(served.name, report, 0)
    return window.token_ids if window is not None else ids, report


def cut_long_prompt(state: AppState, served: ServedModel, text: str, refusal: ContextOverflow, *,
                    add_special_tokens: bool, prefix_ids: Sequence[int] | None, requested: str | None,
                    context_len: int, max_tokens: int | None, num_keep: int,
                    shift: bool = True) -> tuple[list[int], ContextReport]:
    """/api/generate: a prompt too long to tokenize (the tokenizer's `refusal`: surely over the context) is
    cut as any prompt over the context (fit_token_prompt), from the ids of its ends (velollm.context.text_ends:
    the whole is never tokenized, so a huge body stays cheap), after the `prefix_ids` (its `context`). In the
    error mode it is Ollama's 400."""
    mode = resolve_overflow(requested, state.config.context_overflow, "ollama")  # type: ignore[arg-type]
    if mode == "error":
        raise ollama_overflow(refusal)
    budget = context_len - answer_reserve(context_len, max_tokens, shift)
    ids, cut, num_ids = cut_text(served.engine.tokenizer, text, budget, num_keep, context_len=context_len,
                                 add_special_tokens=add_special_tokens, prefix_ids=prefix_ids or ())
    report = ContextReport(mode, num_ids, len(ids), cut_tokens=(cut.keep, cut.end) if cut is not None else None)
    context_state(state).metrics.observe(served.name, report, 0)
    return ids, report


def context_headers(fitted: FittedPrompt | ContextReport | None) -> dict[str, str]:
    """`x-velollm-context` when the prompt that ran is not the one the client sent."""
    report = fitted.report if isinstance(fitted, FittedPrompt) else fitted
    if report is None:
        return {}
    return {HEADER: report.header()}
