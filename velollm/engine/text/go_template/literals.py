"""Go literals in templates: quoted and raw strings, rune constants, int and float numbers."""

from __future__ import annotations

import ast
import re

_INT = re.compile(r"[+-]?(0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO]?[0-7_]*|[1-9][0-9_]*|0)")


def constant(kind: str, text: str) -> str | int | float:
    if kind == "rawstring":
        return text
    if kind == "string":
        return _unquote(text)
    if kind == "char":
        value = _unquote('"' + text[1:-1].replace('"', '\\"') + '"')
        if len(value) != 1:
            raise ValueError(f"malformed character constant: {text}")
        return ord(value)
    if _INT.fullmatch(text):
        return int(text.replace("_", ""), 0) if not re.fullmatch(r"[+-]?0[0-7]+", text) else int(text, 8)
    try:
        return float(text.replace("_", ""))
    except ValueError:
        raise ValueError(f"illegal number syntax: {text!r}") from None


def _unquote(text: str) -> str:
    # Go's escapes are a subset of Python's bytes escapes (\a \b \f \n \r \t \v \\ \" \xNN \NNN \uNNNN \UNNNNNNNN).
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ValueError(f"invalid syntax: {text}") from None
