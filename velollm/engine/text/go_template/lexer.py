"""Go text/template's lexer: text between `{{ }}` actions, trims (`{{- `, ` -}}`) and comments applied."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from velollm.engine.text.go_template.errors import GoTemplateError

_SPACE = " \t\r\n"
KEYWORDS = frozenset({"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue",
                      "nil", "true", "false"})


@dataclass(frozen=True)
class Token:
    kind: str  # text | open | close | space | ident | keyword | field | var | dot | string | char | number | ...
    value: str
    line: int
    pos: int = 0  # where it starts in the source (a character index): the place Go's exec errors name


class _Lines:
    """The line of a position: the newlines found once, then a bisection (counting from the start for each
    token made a megabyte template take minutes)."""

    def __init__(self, src: str) -> None:
        self.newlines = [m.start() for m in re.finditer("\n", src)]

    def __call__(self, pos: int) -> int:
        return bisect.bisect_left(self.newlines, pos) + 1


def tokenize(src: str) -> list[Token]:
    """All tokens of `src`; an action is `open`, its tokens, `close`. Comments vanish."""
    out: list[Token] = []
    line_of = _Lines(src)
    pos, trim_next = 0, False
    while pos <= len(src):
        start = src.find("{{", pos)
        end = len(src) if start < 0 else start
        text = src[pos:end]
        trim_left = start >= 0 and src[start + 2:start + 3] == "-" and src[start + 3:start + 4] in tuple(_SPACE)
        if trim_next:
            text = text.lstrip(_SPACE)
        if trim_left:
            text = text.rstrip(_SPACE)
        if text:
            out.append(Token("text", text, line_of(pos)))
        if start < 0:
            break
        pos = start + 2 + (2 if trim_left else 0)
        pos, trim_next = _action(src, pos, out, line_of(pos))
    return out


def _action(src: str, pos: int, out: list[Token], line: int) -> tuple[int, bool]:
    if src.startswith("/*", pos):
        close = src.find("*/", pos + 2)
        if close < 0:
            raise GoTemplateError(f"template: :{line}: unclosed comment")
        after = close + 2
        if src.startswith(" -}}", after):
            return after + 4, True
        if src.startswith("}}", after):
            return after + 2, False
        raise GoTemplateError(f"template: :{line}: comment ends before closing delimiter")
    out.append(Token("open", "{{", line, pos))
    while True:
        if pos >= len(src):
            raise GoTemplateError(f"template: :{line}: unclosed action")
        if src.startswith("}}", pos):
            out.append(Token("close", "}}", line, pos))
            return pos + 2, False
        if src[pos] in _SPACE:
            stop = pos
            while stop < len(src) and src[stop] in _SPACE:
                stop += 1
            if src.startswith("-}}", stop):
                out.append(Token("close", "}}", line, pos))
                return stop + 3, True
            out.append(Token("space", src[pos:stop], line, pos))
            pos = stop
            continue
        pos = _item(src, pos, out, line)


def _item(src: str, pos: int, out: list[Token], line: int) -> int:
    c = src[pos]
    if src.startswith(":=", pos):
        out.append(Token("declare", ":=", line, pos))
        return pos + 2
    simple = {"|": "pipe", "(": "lparen", ")": "rparen", "=": "assign", ",": "comma"}
    if c in simple:
        out.append(Token(simple[c], c, line, pos))
        return pos + 1
    if c == '"':
        return _quoted(src, pos, out, line, '"', "string")
    if c == "'":
        return _quoted(src, pos, out, line, "'", "char")
    if c == "`":
        close = src.find("`", pos + 1)
        if close < 0:
            raise GoTemplateError(f"template: :{line}: unterminated raw quoted string")
        out.append(Token("rawstring", src[pos + 1:close], line, pos))
        return close + 1
    if c == "$":
        stop = _word_end(src, pos + 1)
        out.append(Token("var", src[pos:stop], line, pos))
        return stop
    if c == ".":
        if pos + 1 < len(src) and src[pos + 1].isdigit():
            return _number(src, pos, out, line)
        stop = _word_end(src, pos + 1)
        out.append(Token("field", src[pos:stop], line, pos) if stop > pos + 1 else Token("dot", ".", line, pos))
        return stop
    if c.isdigit() or (c in "+-" and pos + 1 < len(src) and (src[pos + 1].isdigit() or src[pos + 1] == ".")):
        return _number(src, pos, out, line)
    if c.isalpha() or c == "_":
        stop = _word_end(src, pos)
        word = src[pos:stop]
        out.append(Token("keyword" if word in KEYWORDS else "ident", word, line, pos))
        return stop
    raise GoTemplateError(f"template: :{line}: unexpected {c!r} in command")


def _word_end(src: str, pos: int) -> int:
    while pos < len(src) and (src[pos].isalnum() or src[pos] == "_"):
        pos += 1
    return pos


def _number(src: str, pos: int, out: list[Token], line: int) -> int:
    stop = pos + 1
    while stop < len(src) and (src[stop].isalnum() or src[stop] in "._" or
                               (src[stop] in "+-" and src[stop - 1] in "eEpP")):
        stop += 1
    out.append(Token("number", src[pos:stop], line, pos))
    return stop


def _quoted(src: str, pos: int, out: list[Token], line: int, quote: str, kind: str) -> int:
    i = pos + 1
    while i < len(src):
        if src[i] == "\\":
            i += 2
            continue
        if src[i] == "\n":
            break
        if src[i] == quote:
            out.append(Token(kind, src[pos:i + 1], line, pos))
            return i + 1
        i += 1
    raise GoTemplateError(f"template: :{line}: unterminated quoted string")
