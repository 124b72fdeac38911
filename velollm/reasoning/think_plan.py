"""ThinkPlan: how one request handles thinking, from the prompt to the split answer."""

from __future__ import annotations

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

    def stream(self, prompt_opened: bool) -> PlannedStream:
        """A splitter for one streamed answer."""
        inner = self.parser.stream(prompt_opened) if self.parser is not None else None
        return PlannedStream(self, inner)

    def _shown(self, delta: ReasoningDelta) -> ReasoningDelta:
        return delta if self.return_reasoning else ReasoningDelta(content=delta.content)


class PlannedStream:
    """A ReasoningStream under a plan; counts the answer's reasoning tokens as they pass."""

    def __init__(self, plan: ThinkPlan, inner: ReasoningStream | None) -> None:
        self._plan, self._inner = plan, inner
        self.num_reasoning_tokens = 0

    def feed(self, text: str, num_tokens: int = 0) -> ReasoningDelta:
        """`text` and the number of tokens it came from (counted as reasoning while thinking)."""
        if self._inner is None:
            return ReasoningDelta(content=text)
        if self._inner.in_reasoning:
            self.num_reasoning_tokens += num_tokens
        return self._plan._shown(self._inner.feed(text))

    def finish(self) -> ReasoningDelta:
        if self._inner is None:
            return ReasoningDelta()
        return self._plan._shown(self._inner.finish())
