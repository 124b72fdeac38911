"""ThinkingTemplate: what a model's chat template does about thinking, and how a request maps onto it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from velollm.errors import InvalidRequest
from velollm.reasoning.families import ReasoningFamily, family_for_template
from velollm.reasoning.think_plan import ThinkPlan
from velollm.reasoning.think_setting import ThinkSetting


@dataclass(frozen=True)
class ThinkingTemplate:
    family: ReasoningFamily | None
    toggle: bool = False  # the template takes `enable_thinking` (Qwen3): thinking can be switched off
    effort: bool = False  # the template takes `reasoning_effort` (think levels)
    # the template sees whether think was set (a Go TEMPLATE layer's .IsThinkSet), even if it cannot switch it
    reads_setting: bool = False

    @classmethod
    def of(cls, template: str | Mapping[str, str] | None) -> ThinkingTemplate:
        text = "\n".join(template.values()) if isinstance(template, Mapping) else (template or "")
        return cls(family_for_template(text), "enable_thinking" in text, "reasoning_effort" in text)

    @property
    def supports_thinking(self) -> bool:
        """Ollama's `thinking` capability."""
        return self.family is not None

    def plan(self, setting: ThinkSetting, *, model: str, strict: bool) -> ThinkPlan:
        """The plan for a request. Unset thinking follows Ollama: on when the model can think.
        `strict` (Ollama): asking a model that cannot think to think is a 400, as Ollama answers;
        OpenAI's reasoning_effort is accepted and has no effect there."""
        if self.family is None:
            if strict and setting.enabled:
                raise InvalidRequest(f'"{model}" does not support thinking', param="think")
            # think:false is accepted; a template that reads it gets it (Ollama: .IsThinkSet true, .Think false)
            off = setting.enabled is False and (self.toggle or self.reads_setting)
            return ThinkPlan(template_kwargs={"enable_thinking": False} if off else {})
        enabled = setting.enabled is not False
        kwargs: dict[str, Any] = {}
        if self.toggle or self.reads_setting:
            kwargs["enable_thinking"] = enabled
        if self.effort and enabled and setting.level is not None:
            kwargs["reasoning_effort"] = "high" if setting.level == "max" else setting.level
        # A template that cannot switch thinking may still skip it (an older R1 distill writes <think>
        # itself, and nothing forces it): the constrained answer may then come at once.
        return ThinkPlan(thinking=enabled or not self.toggle, parser=self.family.parser(), return_reasoning=enabled,
                         template_kwargs=kwargs, optional=not self.toggle)
