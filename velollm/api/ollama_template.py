"""The small subset of Ollama's Go templates that a request's `template` field may use.

Supported: `{{ .System }}`, `{{ .Prompt }}`, `{{ .Response }}`, `{{ if .X }}...{{ else }}...{{ end }}`
and the `{{-`/`-}}` whitespace trims. Output stops at `.Response`, where generation continues.
Anything else (`range .Messages`, functions) is a 400 naming what is not supported.
"""

from __future__ import annotations

import re

from velollm.errors import InvalidRequest

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)
_FIELDS = ("System", "Prompt", "Response")


def _unsupported(action: str) -> InvalidRequest:
    return InvalidRequest(f"template action {{{{ {action} }}}} is not supported; templates may use "
                          "{{ .System }}, {{ .Prompt }}, {{ .Response }} and {{ if .X }}...{{ else }}...{{ end }}",
                          param="template")


def _parts(template: str) -> list[tuple[str, str]]:
    """(kind, value) pairs: ("text", s) or ("action", s), with trims already applied to the text."""
    parts: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        parts.append(("text", text))
        parts.append(("action", m.group(2)))
        trim_next = bool(m.group(3))
        pos = m.end()
    tail = template[pos:]
    parts.append(("text", tail.lstrip() if trim_next else tail))
    return parts


def render(template: str, *, system: str | None, prompt: str) -> str:
    values = {"System": system or "", "Prompt": prompt, "Response": ""}
    out: list[str] = []
    active = [True]  # one entry per open `if`: whether its current branch is emitted
    taken: list[bool] = []
    for kind, value in _parts(template):
        if kind == "text":
            if all(active):
                out.append(value)
            continue
        field = value[1:] if value.startswith(".") else None
        if field in _FIELDS:
            if all(active):
                if field == "Response":
                    return "".join(out)
                out.append(values[field])
        elif value.startswith("if ") and value[3:].strip().lstrip(".") in _FIELDS:
            cond = bool(values[value[3:].strip().lstrip(".")])
            active.append(cond)
            taken.append(cond)
        elif value == "else" and taken:
            active[-1] = not taken[-1]
        elif value == "end" and taken:
            active.pop()
            taken.pop()
        else:
            raise _unsupported(value)
    if taken:
        raise InvalidRequest("template has an `if` without `end`", param="template")
    return "".join(out)
