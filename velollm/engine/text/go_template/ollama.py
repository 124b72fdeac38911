"""Ollama's template package: Parse (appending `{{ .Response }}`), Vars, and Execute's two paths (a
`.Messages` template rendered once; a legacy .System/.Prompt/.Response one turn by turn, cut at the
last `.Response`), with its funcs (json, currentDate, yesterdayDate, toTypeScriptType)."""

from __future__ import annotations

import copy
import datetime
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from velollm.engine.text.go_template.builtins import NAMES
from velollm.engine.text.go_template.errors import GoTemplateError
from velollm.engine.text.go_template.executor import execute
from velollm.engine.text.go_template.nodes import (
    Action,
    Branch,
    Command,
    FieldNode,
    Pipe,
    TemplateNode,
    VariableNode,
)
from velollm.engine.text.go_template.ollama_values import (
    message_content,
    template_message,
    template_tools,
    to_typescript_type,
)
from velollm.engine.text.go_template.parser import parse
from velollm.engine.text.go_template.values import go_json


def _date(days: int) -> Callable[..., str]:
    def date(*_format: Any) -> str:  # Ollama accepts a format argument and ignores it
        return (datetime.datetime.now() + datetime.timedelta(days=days)).strftime("%Y-%m-%d")
    return date


FUNCS: dict[str, Callable[..., Any]] = {"json": go_json, "currentDate": _date(0), "yesterdayDate": _date(-1),
                                         "toTypeScriptType": to_typescript_type}
_RESPONSE = Action(Pipe([Command([FieldNode(["Response"])])]))


CACHED_CHARS = 256 << 10  # templates up to this size are kept parsed (model layers, a client's repeated one)


@dataclass(frozen=True)
class OllamaTemplate:
    source: str
    nodes: list[Any]
    vars: frozenset[str]
    templates: dict[str, list[Any]]  # the set `{{template}}` looks in: "" is `nodes`, then defines and blocks

    @functools.cached_property
    def cut_nodes(self) -> list[Any]:
        """The legacy path's last pass: the nodes up to the first `.Response` (cut once, not per render)."""
        return _cut_after_response(copy.deepcopy(self.nodes))


def parse_template(source: str) -> OllamaTemplate:
    """template.Parse: Go's parse errors; `{{ .Response }}` appended when neither .Messages nor .Response
    is named. Kept parsed when small: a parse tree is some 50x its source, and a request's large template
    must not pin memory or push the models' layers out."""
    return _parse_cached(source) if len(source) <= CACHED_CHARS else _parse(source)


def _parse(source: str) -> OllamaTemplate:
    parsed = parse(source, NAMES | set(FUNCS))
    # Ollama's Vars: the names in every template of the set, its defines and blocks too
    names = frozenset(n.lower() for tree in parsed.trees.values() for n in identifiers(tree))
    nodes = parsed.root
    if "messages" not in names and "response" not in names:
        nodes = [*nodes, _RESPONSE]
    return OllamaTemplate(source, nodes, names, {**parsed.trees, "": nodes})


_parse_cached = functools.lru_cache(maxsize=64)(_parse)


def identifiers(node: Any) -> list[str]:
    """template.Identifiers: names of fields and variables in actions and branch pipes (not chains)."""
    if isinstance(node, list):
        return [n for child in node for n in identifiers(child)]
    if isinstance(node, Action):
        return identifiers(node.pipe)
    if isinstance(node, TemplateNode):  # Ollama's walk reads its pipe (a nil one panics there: none here)
        return identifiers(node.pipe) if node.pipe is not None else []
    if isinstance(node, Branch):
        return identifiers(node.pipe) + identifiers(node.body) + identifiers(node.else_body or [])
    if isinstance(node, Pipe):
        return [n for cmd in node.cmds for arg in cmd.args for n in identifiers(arg)]
    if isinstance(node, (FieldNode, VariableNode)):
        return list(node.idents)
    return []


@dataclass(frozen=True)
class Think:
    think: bool = False
    level: str = ""
    is_set: bool = False

    def values(self) -> dict[str, Any]:
        return {"Think": self.think, "ThinkLevel": self.level, "IsThinkSet": self.is_set}


def collate(messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Ollama's collate: all system contents joined; consecutive same-role messages (tool aside) merged."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        msg = dict(m)
        if msg.get("role") == "system":
            system.append(message_content(msg))
        if out and out[-1].get("role") == msg.get("role") and msg.get("role") != "tool":
            out[-1] = {**out[-1], "content": message_content(out[-1]) + "\n\n" + message_content(msg)}
        else:
            out.append(msg)
    return "\n\n".join(system), out


def render(template: OllamaTemplate, messages: Sequence[Mapping[str, Any]],
           tools: Sequence[Mapping[str, Any]] | None = None, think: Think | None = None) -> str:
    """Ollama's Template.Execute for a chat (no suffix)."""
    think = think or Think()
    system, collated = collate(messages)
    if "messages" in template.vars:
        data = {"System": system, "Messages": [template_message(m) for m in collated],
                "Tools": template_tools(tools), "Response": "", **think.values()}
        return execute(template.nodes, data, FUNCS, template.templates, template.source)
    return _legacy(template, collated, think)


def render_insert(template: OllamaTemplate, prompt: str, suffix: str, think: Think | None = None) -> str:
    """Ollama's Template.Execute for a fill-in-the-middle request (a prompt and a suffix): the whole template
    over Prompt, Suffix, an empty Response and the think values; no messages, no system."""
    data = {"Prompt": prompt, "Suffix": suffix, "Response": "", **(think or Think()).values()}
    return execute(template.nodes, data, FUNCS, template.templates, template.source)


def _legacy(template: OllamaTemplate, messages: list[dict[str, Any]], think: Think) -> str:
    out: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}

    def run() -> None:
        out.append(execute(template.nodes, {**turn, **think.values()}, FUNCS, template.templates, template.source))
        turn.update(System="", Prompt="", Response="")

    for m in messages:
        role, content = m.get("role"), message_content(m)
        if role == "system":
            if turn["Prompt"] or turn["Response"]:
                run()
            turn["System"] = content
        elif role == "user":
            if turn["Response"]:
                run()
            turn["Prompt"] = content
        elif role == "assistant":
            turn["Response"] = content
    # Ollama's last pass is a template of its own: no funcs, no defines (`{{template "x"}}` is not defined there)
    out.append(execute(template.cut_nodes, {**turn, **think.values()}, {}, source=template.source))
    return "".join(out)


def _cut_after_response(nodes: list[Any]) -> list[Any]:
    """Ollama's deleteNode: drop every node after the first `.Response` field, in tree order."""
    cut = [False]

    def fn(node: Any) -> bool:
        if isinstance(node, FieldNode) and "Response" in node.idents:
            cut[0] = True
            return False
        return cut[0]

    def walk(node: Any) -> Any:
        if fn(node):
            return None
        if isinstance(node, list):
            node[:] = [n for n in (walk(c) for c in node) if n is not None]
            return node
        if isinstance(node, Branch):
            node.body = walk(node.body)
            if node.else_body is not None:
                else_body = walk(node.else_body)
                if else_body is None:  # Go panics on this type assertion
                    raise GoTemplateError("template: cannot cut the template at .Response inside an if/else")
                node.else_body = else_body
        elif isinstance(node, Action):
            pipe = walk(node.pipe)
            if pipe is None:
                return None
        elif isinstance(node, Pipe):
            for cmd in node.cmds:
                cmd.args = [a for a in (walk(a) for a in cmd.args) if a is not None]
                if not cmd.args:
                    return None
        return node

    result = walk(nodes)
    return result if result is not None else []


