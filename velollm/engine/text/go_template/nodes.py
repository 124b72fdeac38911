"""The parse tree of a Go template (text/template/parse's node kinds that templates use)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Text:
    text: str


@dataclass
class FieldNode:
    idents: list[str]  # .A.B -> ["A", "B"]


@dataclass
class VariableNode:
    idents: list[str]  # $x.A -> ["$x", "A"]


@dataclass
class ChainNode:
    node: Any
    fields: list[str]


@dataclass
class IdentifierNode:
    name: str  # a function name


@dataclass
class DotNode:
    pass


@dataclass
class NilNode:
    pass


@dataclass
class ConstNode:
    value: Any  # str | int | float | bool


@dataclass
class Command:
    args: list[Any]


@dataclass
class Pipe:
    cmds: list[Command]
    decl: list[str] = field(default_factory=list)
    is_assign: bool = False


@dataclass
class Action:
    pipe: Pipe


@dataclass
class Branch:
    kind: str  # if | range | with
    pipe: Pipe
    body: list[Any]
    else_body: list[Any] | None = None


@dataclass
class LoopControl:
    kind: str  # break | continue
