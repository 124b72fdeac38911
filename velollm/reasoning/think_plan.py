"""ThinkPlan: how one request handles thinking, from the prompt to the split answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from velollm.reasoning.parser import ReasoningDelta, ReasoningParser, ReasoningStream
from velollm.sampling_params import ReasoningSpan, StructuredOutput


@dataclass(frozen=True)
class ThinkPlan:
    """parser None: the model does not think (the answer is all content). return_reasoning False:
    the request turned thinking off; a template that cannot (DeepSeek-R1, QwQ) thinks anyway and
    the thinking is dropped from the answer. thinking: the model is expected to think first, so a
    constraint on the answer (JSON, tool calls) starts after the thinking; optional: it may skip it.
    template_kwargs: what the chat template is rendered with (enable_thinking, reasoning_effort).
    """

    thinking: bool = False
    parser: ReasoningParser | None = None
    return_reasoning: bool = True
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    optional: bool = False

    def prompt_opened(self, prompt_tail: str) -> bool:
        """The rendered prompt (its last few tokens, decoded with special tokens) opened the thinking."""
        return self.parser is not None and self.parser.prompt_opens_reasoning(prompt_tail)

    def constrain(self, spec: StructuredOutput | None, prompt_opened: bool) -> StructuredOutput | None:
        """`spec` applied after the thinking, when the model thinks first."""
        if spec is None or self.parser is None or not self.thinking:
            return spec
        begin = "" if prompt_opened else self.parser.start_marker
        span = ReasoningSpan(begin, self.parser.end_marker, optional=self.optional and not prompt_opened)
        return replace(spec, reasoning=span)

    def split(self, text: str, prompt_opened: bool) -> ReasoningDelta:
        """A whole answer, split (the thinking dropped when it was not asked for)."""
        if self.parser is None:
            return ReasoningDelta(content=text)
        return self._shown(self.parser.split(text, prompt_opened))

    def stream(self, prompt_opened: bool, end_token_id: int | None = None) -> PlannedStream:
        """A splitter for one answer, fed as it streams (`end_token_id`: the end marker's id, if one token)."""
        inner = self.parser.stream(prompt_opened) if self.parser is not None else None
        return PlannedStream(self, inner, end_token_id)

    def _shown(self, delta: ReasoningDelta) -> ReasoningDelta:
        return delta if self.return_reasoning else ReasoningDelta(content=delta.content)


class PlannedStream:
    """A ReasoningStream under a plan; counts the answer's reasoning tokens as they pass.

    With the end marker's token id (a single token in Qwen3's, QwQ's and R1's vocabularies) the
    count is exact: the tokens up to and including it. Without it, tokens are counted while the
    text is still thinking (exact when the text comes token by token)."""

    def __init__(self, plan: ThinkPlan, inner: ReasoningStream | None, end_token_id: int | None = None) -> None:
        self._plan, self._inner, self._end_token_id = plan, inner, end_token_id
        self._num_tokens = self._counted = 0
        self._end_at: int | None = None
        self._thought = False

    def feed(self, text: str, token_ids: Sequence[int] = ()) -> ReasoningDelta:
        """`text` and the tokens it came from."""
        if self._inner is None:
            return ReasoningDelta(content=text)
        if self._end_at is None and self._end_token_id in token_ids:
            self._end_at = self._num_tokens + list(token_ids).index(self._end_token_id) + 1  # type: ignore[arg-type]
        self._num_tokens += len(token_ids)
        if self._inner.in_reasoning:
            self._counted += len(token_ids)
        return self._shown(self._inner.feed(text))

    def finish(self) -> ReasoningDelta:
        return self._shown(self._inner.finish()) if self._inner is not None else ReasoningDelta()

    def _shown(self, delta: ReasoningDelta) -> ReasoningDelta:
        self._thought = self._thought or bool(delta.reasoning)
        return self._plan._shown(delta)

    @property
    def num_reasoning_tokens(self) -> int:
        if self._inner is None or not self._thought:
            return 0
        if self._end_at is not None:
            return self._end_at
        return self._num_tokens if self._inner.in_reasoning else self._counted
