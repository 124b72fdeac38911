"""An Ollama Modelfile read as Ollama's parser reads it (parser/parser.go), command by command.

    FROM llama3.2            # a model name, or a path to a GGUF file or a model folder
    PARAMETER temperature 0.2
    PARAMETER stop "<|eot_id|>"
    SYSTEM \"\"\"You are terse.
    Very terse.\"\"\"
    MESSAGE user Hi

The rules, Ollama's: a command is a word of letters at the start of a line (any case; FROM is named
`model`); a `#` there starts a comment; a value runs to the end of its line, where `"..."` or `\"\"\"...\"\"\"`
around it are removed and let it span lines; PARAMETER takes a name (letters, digits, `_`) then a value;
MESSAGE takes a role (system, user, assistant) then a value, kept as `role: value`. A byte-order mark
(UTF-8 or UTF-16) is honoured. Errors carry the line number as Ollama writes them: `(line 3): ...`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

COMMANDS = ("from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter",
            "message", "requires")
ROLES = ("system", "user", "assistant")
INVALID_COMMAND = ('command must be one of "from", "license", "template", "system", "adapter", "draft", "renderer", '
                   '"parser", "parameter", "message", or "requires"')
INVALID_ROLE = 'message role must be one of "system", "user", or "assistant"'


class ModelfileError(ValueError):
    """A Modelfile Ollama would refuse, with its message."""


@dataclass(frozen=True)
class Command:
    name: str  # "model" for FROM, a parameter's own name for PARAMETER, else the command in lower case
    args: str  # the value, unquoted; MESSAGE's is "role: content"


class _State(enum.Enum):
    NIL = enum.auto()
    NAME = enum.auto()
    VALUE = enum.auto()
    PARAMETER = enum.auto()
    MESSAGE = enum.auto()
    COMMENT = enum.auto()


class _UnexpectedEnd(Exception):
    pass


def decode(raw: bytes) -> str:
    """The file's text: UTF-16 when it starts with that byte-order mark, else UTF-8 (a BOM dropped)."""
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return raw.decode("utf-16")
    return raw.decode("utf-8-sig", errors="replace")


def parse(text: str) -> list[Command]:
    """The commands of a Modelfile, in order; ModelfileError as Ollama's parser fails."""
    commands: list[Command] = []
    state, line, buffer, role, name = _State.NIL, 1, [], "", ""
    for char in text:
        if char in "\r\n":
            line += 1
        try:
            following, keep = _step(char, state)
        except _UnexpectedEnd:
            raise ModelfileError(f"unexpected EOF: {''.join(buffer)}") from None
        except ModelfileError as exc:
            raise ModelfileError(f"(line {line}): {exc}") from None
        if following is not state:
            if state is _State.NAME:
                word = "".join(buffer).lower()
                if word not in COMMANDS:
                    raise ModelfileError(f"(line {line}): {INVALID_COMMAND}")
                if word == "parameter":
                    following = _State.PARAMETER
                elif word == "message":
                    following, name = _State.MESSAGE, word
                else:
                    name = "model" if word == "from" else word
            elif state is _State.PARAMETER:
                name = "".join(buffer)
            elif state is _State.MESSAGE:
                role = "".join(buffer)
                if role not in ROLES:
                    raise ModelfileError(f"(line {line}): {INVALID_ROLE}")
            elif state is _State.VALUE:
                value = _unquote("".join(buffer).strip())
                if value is None or char in " \t":  # inside quotes, or a space within the value: go on
                    buffer.append(char)
                    continue
                commands.append(Command(name, f"{role}: {value}" if role else value))
                role = ""
            buffer, state = [], following
        if keep is not None and keep.isprintable():
            buffer.append(keep)
    if state is _State.VALUE:
        value = _unquote("".join(buffer).strip())
        if value is None:
            raise ModelfileError("unexpected EOF")
        commands.append(Command(name, f"{role}: {value}" if role else value))
    elif state not in (_State.NIL, _State.COMMENT):
        raise ModelfileError("unexpected EOF")
    if not any(c.name == "model" for c in commands):
        raise ModelfileError("no FROM line")
    return commands


def _step(char: str, state: _State) -> tuple[_State, str | None]:
    """The state after `char`, and the character to keep (None: nothing)."""
    space, newline = char in " \t", char in "\r\n"
    if state is _State.NIL:
        if char == "#":
            return _State.COMMENT, None
        return (_State.NIL, None) if space or newline else (_State.NAME, char)
    if state is _State.NAME:
        if _letter(char):
            return _State.NAME, char
        if space:
            return _State.VALUE, None
        raise ModelfileError(INVALID_COMMAND)
    if state is _State.VALUE:
        return (_State.NIL, char) if space or newline else (_State.VALUE, char)
    if state is _State.PARAMETER:
        if _letter(char) or "0" <= char <= "9" or char == "_":
            return _State.PARAMETER, char
        if space:
            return _State.VALUE, None
        raise _UnexpectedEnd
    if state is _State.MESSAGE:
        if _letter(char):
            return _State.MESSAGE, char
        if space:
            return _State.VALUE, None
        raise _UnexpectedEnd
    return (_State.NIL, None) if newline else (_State.COMMENT, None)


def _letter(char: str) -> bool:
    return "a" <= char <= "z" or "A" <= char <= "Z"


def _unquote(value: str) -> str | None:
    """The value without its quotes; None while a quote is still open."""
    if value.startswith('"""'):
        return value[3:-3] if len(value) >= 6 and value.endswith('"""') else None
    if value.startswith('"'):
        return value[1:-1] if len(value) >= 2 and value.endswith('"') else None
    return value
