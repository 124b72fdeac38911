"""Thinking: one native request's reasoning handling, from the template to the split answer."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any

from velollm.reasoning import THINK_TAGS, PlannedStream, ReasoningFamily, ThinkingTemplate, ThinkPlan, ThinkSetting
from velollm.reasoning.think_tags import ThinkTagParser
from velollm.sampling_params import SamplingParams

_PROMPT_TAIL_TOKENS = 8  # enough to see "<think>\n" at the end of a rendered prompt


def thinking_template(tokenizer: Any) -> ThinkingTemplate:
    """What the model's template does about thinking: its jinja template, else its Ollama TEMPLATE layer
    (a Go template: the tags around `.Thinking` as Ollama infers them, `.Think` / `.ThinkLevel` as the switches)."""
    from velollm.engine.text.template_layer import go_layer  # not at import: --proxy-only loads no engine

    go = go_layer(tokenizer)
    if go is not None:
        from velollm.engine.text.go_template.chat import template_vars, think_tags

        names = template_vars(go)
        return ThinkingTemplate(_go_family(*think_tags(go)), toggle="think" in names, effort="thinklevel" in names,
                                reads_setting="isthinkset" in names)
    return ThinkingTemplate.of(getattr(tokenizer, "chat_template", None))


def _go_family(start: str, end: str) -> ReasoningFamily | None:
    """Ollama's rule for a TEMPLATE layer: it thinks when the tags around `.Thinking` are found, and its
    answers are split on those tags (not on a marker looked for anywhere in the template)."""
    if not start or not end:
        return None
    return ReasoningFamily(THINK_TAGS.name, end, THINK_TAGS.name_pattern, functools.partial(ThinkTagParser, start, end))


def think_plan(tokenizer: Any, setting: ThinkSetting, model: str, *, strict: bool) -> ThinkPlan:
    """The plan for a request on this model (strict: Ollama's 400 for think on a model that cannot)."""
    return thinking_template(tokenizer).plan(setting, model=model, strict=strict)


@dataclass(frozen=True)
class Thinking:
    plan: ThinkPlan
    opened: bool = False  # the prompt ends inside the thinking (DeepSeek-R1, QwQ templates)
    end_token_id: int | None = None

    @classmethod
    def for_prompt(cls, plan: ThinkPlan, tokenizer: Any, prompt_ids: list[int]) -> Thinking | None:
        """None for a model that does not think (nothing to split)."""
        if plan.parser is None:
            return None
        tail = tokenizer.decode(prompt_ids[-_PROMPT_TAIL_TOKENS:], skip_special_tokens=False)
        return cls(plan, plan.prompt_opened(tail), tokenizer.token_to_id(plan.parser.end_marker))

    def constrain(self, params: SamplingParams) -> SamplingParams:
        """A constrained answer (JSON, tool calls) starts after the thinking."""
        return replace(params, structured_output=self.plan.constrain(params.structured_output, self.opened))

    def stream(self) -> PlannedStream:
        return self.plan.stream(self.opened, self.end_token_id)

    @property
    def shows_reasoning(self) -> bool:
        return self.plan.return_reasoning
