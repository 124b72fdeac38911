"""The parse tree of a Go template (text/template/parse's node kinds that templates use)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from velollm.engine.text.go_template.printf import quote
from velollm.engine.text.go_template.values import go_float


@dataclass(slots=True)
class Text:
    text: str


@dataclass(slots=True)
class FieldNode:
    idents: list[str]  # .A.B -> ["A", "B"]
    pos: int = -1  # where the node starts in the source: each node's Go exec errors name (-1: none)


@dataclass(slots=True)
class VariableNode:
    idents: list[str]  # $x.A -> ["$x", "A"]
    pos: int = -1


@dataclass(slots=True)
class ChainNode:
    node: Any
    fields: list[str]
    pos: int = -1


@dataclass(slots=True)
class IdentifierNode:
    name: str  # a function name
    pos: int = -1


@dataclass(slots=True)
class DotNode:
    pos: int = -1


@dataclass(slots=True)
class NilNode:
    pos: int = -1


@dataclass(slots=True)
class ConstNode:
    value: Any  # str | int | float | bool
    pos: int = -1


@dataclass(slots=True)
class Command:
    args: list[Any]
    pos: int = -1


@dataclass(slots=True)
class Pipe:
    cmds: list[Command]
    decl: list[str] = field(default_factory=list)
    is_assign: bool = False
    pos: int = -1


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


@dataclass(slots=True)
class TemplateNode:
    name: str  # {{template "name" pipe}}, and where a {{block}} stands
    pipe: Pipe | None  # None: `{{template "name"}}`, whose dot is no value
    pos: int = -1  # its name's


GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029" \
            "\u202f\u205f\u3000"  # unicode.IsSpace


def is_empty_tree(nodes: list[Any]) -> bool:
    """parse.IsEmptyTree: only space in text (comments are gone already); an empty define yields to another."""
    return all(isinstance(n, Text) and not n.text.strip(GO_SPACE) for n in nodes)


@dataclass(frozen=True, slots=True)
class TemplateSet:
    """A parse's templates by name, as text/template associates them: "" the main one, then each define and
    block; `{{template "name"}}` looks its name up here."""

    trees: dict[str, list[Any]]

    @property
    def root(self) -> list[Any]:
        return self.trees[""]


def go_text(node: Any) -> str:
    """A node as text/template/parse's String() writes it (what Go's errors quote)."""
    if isinstance(node, FieldNode):
        return "." + ".".join(node.idents)
    if isinstance(node, VariableNode):
        return ".".join(node.idents)
    if isinstance(node, ChainNode):
        inner = go_text(node.node)
        return (f"({inner})" if isinstance(node.node, Pipe) else inner) + "".join("." + f for f in node.fields)
    if isinstance(node, IdentifierNode):
        return node.name
    if isinstance(node, DotNode):
        return "."
    if isinstance(node, NilNode):
        return "nil"
    if isinstance(node, ConstNode):
        return _const_text(node.value)
    if isinstance(node, Command):
        return " ".join(f"({go_text(a)})" if isinstance(a, Pipe) else go_text(a) for a in node.args)
    if isinstance(node, TemplateNode):
        return f"{{{{template {quote(node.name)}" + (f" {go_text(node.pipe)}" if node.pipe else "") + "}}"
    if isinstance(node, Pipe):
        decl = ", ".join(node.decl) + (" = " if node.is_assign else " := ") if node.decl else ""
        return decl + " | ".join(go_text(cmd) for cmd in node.cmds)
    return repr(node)


def _const_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, float):
        return go_float(value)
    return str(value)
