"""A /api/generate request's `template` field: a Go template rendered as Ollama renders it
(velollm/engine/text/go_template: the full text/template language, Ollama's Values and funcs).

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
