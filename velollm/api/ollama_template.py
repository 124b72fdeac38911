"""The small subset of Ollama's Go templates that a request's `template` field may use.

Supported: `{{ .System }}`, `{{ .Prompt }}`, `{{ .Response }}`, `{{ if .X }}...{{ else }}...{{ end }}`,
comments `{{/* ... */}}` and the `{{-`/`-}}` whitespace trims. Output stops at `.Response`, where generation continues.
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
    unclosed = next((text for kind, text in parts if kind == "text" and "{{" in text), None)
    if unclosed is not None:  # Go's parser: "unclosed action"
        action = unclosed[unclosed.index("{{"):][:40]
        raise InvalidRequest(f"template has an unclosed action: {action!r} (no closing }}}})", param="template")
    return parts


def check(template: str) -> None:
    """A 400 naming `template` unless all of it is in the supported subset (checked when the request is
    parsed: render stops at `.Response` and would not see the rest)."""
    depth = 0
    for kind, value in _parts(template):
        if kind == "action":
            action, _ = _classify(value)
            depth += {"if": 1, "end": -1}.get(action, 0)
            if depth < 0 or (action == "else" and depth == 0):
                raise InvalidRequest(f"template has {{{{ {action} }}}} without `if`", param="template")
    if depth:
        raise InvalidRequest("template has an `if` without `end`", param="template")


def _classify(value: str) -> tuple[str, str]:
    """("field" | "if", the field name) or ("else" | "end" | "comment", "")."""
    field = value[1:] if value.startswith(".") else None
    if field in _FIELDS:
        return "field", field
    if value.startswith("if ") and value[3:].strip().lstrip(".") in _FIELDS:
        return "if", value[3:].strip().lstrip(".")
    if value in ("else", "end"):
        return value, ""
    if value.startswith("/*") and value.endswith("*/"):
        return "comment", ""
    raise _unsupported(value)


def render(template: str, *, system: str | None, prompt: str) -> str:
    check(template)
    values = {"System": system or "", "Prompt": prompt, "Response": ""}
    out: list[str] = []
    active = [True]  # one entry per open `if`: whether its current branch is emitted
    taken: list[bool] = []
    for kind, value in _parts(template):
        if kind == "text":
            if all(active):
                out.append(value)
            continue
        action, name = _classify(value)
        if action == "field" and all(active):
            if name == "Response":
                return "".join(out)
            out.append(values[name])
        elif action == "if":
            active.append(bool(values[name]))
            taken.append(bool(values[name]))
        elif action == "else":
            active[-1] = not taken[-1]
        elif action == "end":
            active.pop()
            taken.pop()
    return "".join(out)
