"""A /api/generate request's `template` field: a Go template rendered as Ollama renders it
(velollm/engine/text/go_template: the full text/template language, Ollama's Values and funcs); and the
fill-in-the-middle prompts of `suffix` (/api/generate, /v1/completions), rendered by the model's TEMPLATE layer.

A template naming neither .Messages nor .Response gets `{{ .Response }}` appended; a legacy template
(no .Messages) renders turn by turn and stops at the last `.Response`, where generation continues.
A template that does not parse is a 400 with Go's parse error, found where it renders (in a thread:
a parse takes about 1 s per MB); one over MAX_TEMPLATE_CHARS is refused before that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MAX_TEMPLATE_CHARS = 1 << 20  # models' templates are a few KiB; Ollama has no cap


def render(template: str, messages: Sequence[Mapping[str, Any]],
           template_kwargs: Mapping[str, Any] | None = None) -> str:
    from velollm.engine.text.go_template.chat import render_go_chat, think_values  # --proxy-only loads no engine

    kwargs = template_kwargs or {}
    think = think_values(kwargs.get("enable_thinking"), kwargs.get("reasoning_effort"))
    return render_go_chat(template, messages, think=think, param="template")


def insert_template(tokenizer: Any) -> str | None:
    """The model's TEMPLATE layer when it renders fill-in-the-middle prompts (Ollama's insert capability)."""
    from velollm.engine.text.template_layer import insert_layer  # not at import: --proxy-only loads no engine

    return insert_layer(tokenizer)


def render_insert(template: str, prompt: str, suffix: str, template_kwargs: Mapping[str, Any] | None = None) -> str:
    """Ollama's fill-in-the-middle prompt: the template over Prompt and Suffix alone (no system, no history)."""
    from velollm.engine.text.go_template.chat import render_go_insert, think_values

    kwargs = template_kwargs or {}
    think = think_values(kwargs.get("enable_thinking"), kwargs.get("reasoning_effort"))
    return render_go_insert(template, prompt, suffix, think=think)
