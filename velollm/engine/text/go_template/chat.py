"""A chat rendered with a model's Go template (its Ollama TEMPLATE layer), errors as 400s."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from velollm.engine.text.go_template.errors import GoTemplateError
from velollm.engine.text.go_template.ollama import OllamaTemplate, Think, parse_template, render, render_insert
from velollm.errors import InvalidRequest

_LEVELS = {"low", "medium", "high"}


def checked_template(source: str, param: str = "template") -> OllamaTemplate:
    """The parsed template, or a 400 with Go's parse error (what Ollama answers)."""
    try:
        return parse_template(source)
    except GoTemplateError as e:
        raise InvalidRequest(str(e), param=param) from None


def think_values(enable_thinking: Any = None, reasoning_effort: Any = None) -> Think:
    """Ollama's .Think/.ThinkLevel/.IsThinkSet from the template kwargs VeloLLM's think plan sets."""
    if isinstance(reasoning_effort, str) and reasoning_effort in _LEVELS:
        return Think(True, reasoning_effort, True)
    if isinstance(enable_thinking, bool):
        return Think(enable_thinking, "", True)
    return Think()


def template_vars(source: str) -> frozenset[str]:
    """Ollama's Vars (lower-cased field and variable names); none for a template that does not parse."""
    try:
        return parse_template(source).vars
    except GoTemplateError:
        return frozenset()


def uses_tools(source: str) -> bool:
    return "tools" in template_vars(source)


def think_tags(source: str) -> tuple[str, str]:
    """Ollama's thinking.InferTags: the tags around `.Thinking` in the template, ("", "") for none or for a
    template that does not parse."""
    from velollm.engine.text.go_template.think_tags import infer_think_tags

    try:
        return infer_think_tags(parse_template(source).templates[""])
    except GoTemplateError:
        return "", ""


def render_go_chat(source: str, messages: Sequence[Mapping[str, Any]], *,
                   tools: Sequence[Mapping[str, Any]] | None = None, think: Think | None = None,
                   param: str = "messages") -> str:
    """The prompt Ollama builds for this chat with this template (template.Execute)."""
    if not messages:
        raise InvalidRequest("messages must not be empty", param="messages")
    template = checked_template(source, param="template")
    try:
        return render(template, messages, tools, think or Think())
    except GoTemplateError as e:
        raise InvalidRequest(f"the model's template failed on this chat: {e}", param=param) from None


def render_go_insert(source: str, prompt: str, suffix: str, *, think: Think | None = None,
                     param: str = "suffix") -> str:
    """The fill-in-the-middle prompt Ollama builds with this template (template.Execute over Prompt and Suffix)."""
    template = checked_template(source, param="template")
    try:
        return render_insert(template, prompt, suffix, think)
    except GoTemplateError as e:
        raise InvalidRequest(f"the model's template failed on this prompt: {e}", param=param) from None
