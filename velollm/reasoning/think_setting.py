"""ThinkSetting: what a request asks about thinking, from Ollama's `think` or OpenAI's fields."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from velollm.errors import InvalidRequest

THINK_LEVELS = ("low", "medium", "high", "max")
# OpenAI reasoning_effort -> Ollama think, as Ollama's OpenAI layer maps it.
_EFFORTS: dict[str, bool | str] = {"none": False, "minimal": "low", "low": "low", "medium": "medium",
                                   "high": "high", "max": "max", "xhigh": "max", "ultra": "max"}


@dataclass(frozen=True)
class ThinkSetting:
    """enabled: None when the request did not say (the model's default applies); level: a think
    level ("low".."max") when one was asked for."""

    enabled: bool | None = None
    level: str | None = None

    @classmethod
    def from_ollama(cls, value: Any) -> ThinkSetting:
        """Ollama `think`: true, false, or a level; anything else is Ollama's 400."""
        if value is None:
            return cls()
        if isinstance(value, bool):
            return cls(value)
        if isinstance(value, str) and value in THINK_LEVELS:
            return cls(True, value)
        raise InvalidRequest(f"invalid think value: {value!r}", param="think")

    @classmethod
    def from_openai(cls, reasoning_effort: Any, template_kwargs: Mapping[str, Any] | None = None,
                    param: str = "reasoning_effort") -> ThinkSetting:
        """`reasoning_effort` (or the Responses API's `reasoning.effort`); vLLM's
        `chat_template_kwargs.enable_thinking` wins when both are given."""
        setting = cls()
        if reasoning_effort is not None:
            if not isinstance(reasoning_effort, str) or reasoning_effort not in _EFFORTS:
                raise InvalidRequest(f"{param} must be one of {sorted(_EFFORTS)}, got {reasoning_effort!r}",
                                     param=param)
            think = _EFFORTS[reasoning_effort]
            setting = cls(think) if isinstance(think, bool) else cls(True, think)
        enable = (template_kwargs or {}).get("enable_thinking")
        if isinstance(enable, bool):
            setting = cls(enable, setting.level if enable else None)
        return setting

    def to_ollama(self) -> bool | str | None:
        """The `think` value that says the same to an Ollama upstream."""
        if self.enabled is None:
            return None
        return self.level if self.enabled and self.level else self.enabled
