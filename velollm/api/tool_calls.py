"""ToolCalls: one chat request's tool calling against the native engine, for /v1 and /api/chat.

The handlers stay unaware of tools: they ask a ToolCalls for the prompt and the sampling params,
then hand it either the finished choices (parsed, repaired, and regenerated with a corrective
message while `--tool-retries` allows) or each streamed delta (parsed as it comes; a stream cannot
take back text it sent, so it is never retried: calls that fail go out as content).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from velollm.api.chat_messages import apply_template
from velollm.api.generation import ChoiceState, EngineCall, GenerationStream
from velollm.context.fitter import FittedPrompt
from velollm.context.token_cut import TokenCut
from velollm.errors import ContextOverflow, InvalidRequest, Overloaded
from velollm.output_budget import fit_max_tokens
from velollm.outputs import RequestDelta
from velollm.sampling_params import SamplingParams
from velollm.tools.tool_parsers import ToolCall
from velollm.tools.tool_prompt import takes_tools
from velollm.tools.tool_repair import RepairResult
from velollm.tools.tool_session import ToolCallConfig, ToolSession
from velollm.tools.tool_stream import StreamingToolParser, ToolCallDelta

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolAnswer:
    """What one choice answers: content (calls taken out) and its validated calls."""

    content: str
    calls: tuple[ToolCall, ...]
    finish_reason: str | None


@dataclass(frozen=True)
class StreamPiece:
    """What one engine delta becomes: content, OpenAI call increments, calls completed (Ollama)."""

    delta: RequestDelta  # text = the content part; finish_reason "tool_calls" when calls went out
    call_deltas: tuple[ToolCallDelta, ...] = ()
    new_calls: tuple[ToolCall, ...] = ()


def check_tools_capability(tokenizer: Any, model: str) -> None:
    """Ollama's 400 for tools on a model without the tools capability, its full name first
    (`registry.ollama.ai/library/gemma:latest does not support tools`); /v1 gets it in OpenAI's shape."""
    if takes_tools(tokenizer):
        return
    from velollm.engine.loader.ollama_store import parse_name

    name = parse_name(model)
    raise InvalidRequest(f"{name.full() if name is not None else model} does not support tools", param="tools")


def _render(session: ToolSession, messages: Sequence[Mapping[str, Any]], kwargs: Mapping[str, Any]) -> str:
    """The prompt text, with template errors as a 400 ("roles must alternate", ...)."""
    return apply_template(session.render_prompt, messages, **kwargs)


def _encode(session: ToolSession, messages: Sequence[Mapping[str, Any]], kwargs: Mapping[str, Any]) -> list[int]:
    return session.tokenizer.encode(_render(session, messages, kwargs), add_special_tokens=False)


class ToolCalls:
    """Tool calling for one chat request whose body carried `tools`."""

    def __init__(self, engine: Any, tools: list[dict[str, Any]], tool_choice: Any, parallel_tool_calls: bool,
                 *, retries: int, metrics: Any, model: str, template_kwargs: Mapping[str, Any] | None = None) -> None:
        check_tools_capability(engine.tokenizer, model)
        self.engine = engine
        self.session = ToolSession(engine.tokenizer, tools, tool_choice, parallel_tool_calls,
                                   model_type=getattr(engine.model_config, "model_type", None),
                                   config=ToolCallConfig(retries=retries))
        # Built (and cached by the session) now, so that a tool_choice naming no given tool fails here.
        self.session.structured_output  # noqa: B018
        self.metrics = metrics
        self.model = model
        self.template_kwargs = dict(template_kwargs or {})
        self.messages: list[dict[str, Any]] = []
        # What the first attempt ran within, for a retry (use_fitted): the context it was fitted to (None:
        # the model's) and the token-level cut of its prompt (Ollama's truncation), which a retry repeats.
        self.context_len: int | None = None
        self.cut: TokenCut | None = None

    def prompt_text(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The prompt text for `messages` (tools included); `use_fitted` says which ones ran."""
        return _render(self.session, messages, self.template_kwargs)

    def use_fitted(self, fitted: FittedPrompt, context_len: int) -> None:
        """What a retry continues: the conversation as context management fitted it for the first attempt
        (the messages kept, compressed or summarized, and the cut of its tokens when it was cut at the token
        level), within the same context (`num_ctx` on /api/chat). A retry is that prompt plus the failed
        answer and the corrective message, so the x-velollm-context report stays true of it; when it no
        longer fits that context, the first answer stands."""
        self.messages = [dict(m) for m in fitted.messages]
        self.context_len = context_len
        self.cut = fitted.cut

    def next_turn(self, text: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The answer as the client sends it back (the parsed content, and its calls as /v1 returns them) and the
        next message but its content: the user's after an answer without calls, the first call's result after one
        with calls; None for an answer that will be retried (the answer is another one)."""
        result = self.session.parse(text)
        if self.session.should_retry(result, 0):
            return None
        if not result.calls:
            return {"role": "assistant", "content": result.content}, {"role": "user"}
        first = result.calls[0]
        answer = {"role": "assistant", "content": result.content, "tool_calls": [c.to_openai() for c in result.calls]}
        return answer, {"role": "tool", "tool_call_id": first.id, "name": first.name}

    def prompt_ids(self, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        """The prompt through the model's template (tools and tool history included), or the fallback."""
        self.messages = [dict(m) for m in messages]
        return _encode(self.session, self.messages, self.template_kwargs)

    def params(self, params: SamplingParams) -> SamplingParams:
        """The tool grammar wins over response_format where the choice forces calls; with "auto" the answer is
        calls or what response_format asks for (ToolSession.constraint_beside); tool markers may be special
        tokens, so an active session detokenizes with them."""
        return replace(params, structured_output=self.session.constraint_beside(params.structured_output),
                       skip_special_tokens=params.skip_special_tokens and self.session.skip_special_tokens)

    async def answers(self, gen: GenerationStream) -> list[ToolAnswer]:
        """Collects every choice, then parses (and retries) each; gen.choices end as the answers' states."""
        states = await gen.collect()
        return list(await asyncio.gather(*(self._answer(gen, s) for s in states)))

    async def _answer(self, gen: GenerationStream, state: ChoiceState) -> ToolAnswer:
        result = self.session.parse(state.text)
        attempt = 0
        while self.session.should_retry(result, attempt):
            attempt += 1
            retried = await self._regenerate(gen, state, result, attempt)
            if retried is None:
                break
            self.count(["retried"])
            _take_over(state, retried)
            result = self.session.parse(state.text)
        self.count(o.outcome for o in result.outcomes)
        return ToolAnswer(result.content, result.calls, ToolSession.finish_reason(result, state.finish_reason))

    async def _regenerate(self, gen: GenerationStream, state: ChoiceState, result: RepairResult,
                          attempt: int) -> ChoiceState | None:
        messages = self.session.retry_messages(self.messages, state.text, result)
        try:
            ids = _encode(self.session, messages, self.template_kwargs)
        except ContextOverflow:  # too long to tokenize (a prompt cut from its ends): the first answer stands
            logger.info("tool-call retry skipped: the corrective conversation is too long to tokenize")
            return None
        if self.cut is not None:  # the same ids go as in the first attempt (the retry's prompt starts as it did)
            ids = self.cut.apply(ids)
        call = gen.calls[state.index]
        context_len = self.context_len or self.engine.max_model_len
        try:
            max_tokens = fit_max_tokens(len(ids), call.params.max_tokens, context_len)
        except ContextOverflow:  # the corrective conversation no longer fits: answer with what we have
            logger.info("tool-call retry skipped: %d prompt tokens leave no room", len(ids))
            return None
        params = replace(call.params, max_tokens=max_tokens, min_tokens=min(call.params.min_tokens, max_tokens))
        retry = GenerationStream(self.engine, [EngineCall(ids, params)], f"{gen.request_id}-{state.index}-r{attempt}",
                                 gen.thinking)
        try:
            await retry.start()
            [out] = await retry.collect()
        except Overloaded as exc:  # the first answer stands (returned as content) rather than a 503
            logger.info("tool-call retry skipped: %s", exc)
            return None
        finally:
            await retry.aclose()
        out.num_prompt_tokens = len(ids)
        return out

    def stream(self) -> ToolStream:
        return ToolStream(self)

    def count(self, outcomes: Iterable[str]) -> None:
        """velollm_tool_calls_total, one increment per outcome."""
        for outcome in outcomes:
            self.metrics.observe_tool_call(self.model, outcome)


def _take_over(state: ChoiceState, new: ChoiceState) -> None:
    """The choice now holds the retry's answer: usage (prompt_eval_count) then counts the tokens of that
    answer and of the prompt it came from, cached ids included."""
    state.text, state.token_ids, state.logprobs = new.text, new.token_ids, new.logprobs
    state.num_prompt_tokens, state.num_cached_tokens = new.num_prompt_tokens, new.num_cached_tokens
    state.reasoning, state.num_reasoning_tokens = new.reasoning, new.num_reasoning_tokens
    state.finish_reason, state.stop_reason, state.t_last = new.finish_reason, new.stop_reason, new.t_last


@dataclass
class ToolStream:
    """Per-choice streaming parsers over the engine's deltas."""

    owner: ToolCalls
    parsers: dict[int, StreamingToolParser] = field(default_factory=dict)
    sent: dict[int, int] = field(default_factory=dict)  # whole calls handed out per choice

    def feed(self, index: int, delta: RequestDelta) -> StreamPiece:
        session = self.owner.session
        if not session.active:
            return StreamPiece(delta)
        parser = self.parsers.get(index)
        if parser is None:
            parser = self.parsers[index] = session.stream_parser()
        out = parser.feed(delta.text)
        content, call_deltas = out.content, list(out.tool_calls)
        finish_reason = delta.finish_reason
        if delta.finished:
            tail = parser.finish()
            content += tail.content
            call_deltas += tail.tool_calls
            finish_reason = "tool_calls" if parser.has_tool_calls else delta.finish_reason
            self.owner.count(o.outcome for o in parser.outcomes)
        done = self.sent.get(index, 0)
        self.sent[index] = len(parser.calls)
        return StreamPiece(replace(delta, text=content, finish_reason=finish_reason), tuple(call_deltas),
                           tuple(parser.calls[done:]))
