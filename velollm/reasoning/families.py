"""Which reasoning format a model writes: the one place that maps a model to its ReasoningParser.

Known from the chat template when there is one (native models), else from the model's name (an
upstream model, whose template VeloLLM does not see). Extension point: a family that marks its
thinking differently registers a parser here. gpt-oss (not a native architecture yet) writes
harmony channels, `<|channel|>analysis<|message|>...<|end|>` then `<|channel|>final<|message|>...`:
its parser would map the analysis channel to reasoning and the final channel to content (and
`commentary` to tool calls), matched on `<|channel|>` in the template or `gpt-oss` in the name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from velollm.reasoning.parser import ReasoningParser
from velollm.reasoning.think_tags import ThinkTagParser


@dataclass(frozen=True)
class ReasoningFamily:
    name: str
    template_marker: str  # text of the chat template that says the model thinks this way
    name_pattern: re.Pattern[str]  # model names (Ollama / HF) of the family, for upstream models
    parser: Callable[[], ReasoningParser]


# Qwen3 (hybrid: enable_thinking), QwQ and DeepSeek-R1 with its Qwen/Llama distills (always think;
# newer R1 templates open <think> in the prompt).
THINK_TAGS = ReasoningFamily(
    "think_tags", "</think>",
    re.compile(r"qwen3|qwq|deepseek[-_]?r1|r1[-_]distill|magistral|phi4[-_]?reasoning|cogito", re.IGNORECASE),
    ThinkTagParser,
)
# Qwen3's non-thinking releases share the family name but never think.
_NEVER_THINKS = re.compile(r"qwen3.*(instruct|coder)|qwen3[-_.]?\w*[-:]2507[-_]?instruct", re.IGNORECASE)

FAMILIES: tuple[ReasoningFamily, ...] = (THINK_TAGS,)


def family_for_template(template: str | None) -> ReasoningFamily | None:
    """The family whose marker the chat template writes, if any."""
    if not template:
        return None
    return next((f for f in FAMILIES if f.template_marker in template), None)


def family_for_name(name: str) -> ReasoningFamily | None:
    """The family a model name belongs to (upstream models: their template is not known here)."""
    if _NEVER_THINKS.search(name):
        return None
    return next((f for f in FAMILIES if f.name_pattern.search(name)), None)
