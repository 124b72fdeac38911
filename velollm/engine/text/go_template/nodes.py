"""The parse tree of a Go template (text/template/parse's node kinds that templates use)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Text:
    text: str


@dataclass(slots=True)
class FieldNode:
    idents: list[str]  # .A.B -> ["A", "B"]


@dataclass(slots=True)
class VariableNode:
    idents: list[str]  # $x.A -> ["$x", "A"]


@dataclass(slots=True)
class ChainNode:
    node: Any
    fields: list[str]


@dataclass(slots=True)
class IdentifierNode:
    name: str  # a function name


@dataclass(slots=True)
class DotNode:
    pass


@dataclass(slots=True)
class NilNode:
    pass


@dataclass(slots=True)
class ConstNode:
    value: Any  # str | int | float | bool


@dataclass(slots=True)
class Command:
    args: list[Any]


@dataclass(slots=True)
class Pipe:
    cmds: list[Command]
    decl: list[str] = field(default_factory=list)
    is_assign: bool = False


@dataclass(slots=True)
class Action:
    pipe: Pipe


@dataclass(slots=True)
class Branch:
    kind: str  # if | range | with
    pipe: Pipe
    body: list[Any]
    else_body: list[Any] | None = None


@dataclass(slots=True)
class LoopControl:
    kind: str  # break | continue
