"""Ollama's thinking.InferTags: the tags a TEMPLATE layer writes around a message's thinking.

Ollama's heuristic, node for node: a `.Thinking` field inside a `range` over `.Messages`; the nearest list
around it gives its first and last text nodes (trimmed) as the opening and closing tags. The last such
`.Thinking` wins. A model has Ollama's `thinking` capability when both tags are found, and its answers are
split on them (`<think>`/`</think>` for Qwen3's and DeepSeek-R1's templates, `[THINK]`/`[/THINK]` for
Magistral's); a template that writes `</think>` only to switch thinking off names no `.Thinking` and thinks not.
"""

from __future__ import annotations

from typing import Any

from velollm.engine.text.go_template.nodes import GO_SPACE, Action, Branch, Command, FieldNode, Pipe, TemplateNode, Text


def infer_think_tags(nodes: list[Any]) -> tuple[str, str]:
    """(opening, closing) as thinking.InferTags finds them in a template's main tree; "" where none."""
    tags = ["", ""]
    ancestors: list[Any] = []

    def visit(node: Any) -> None:
        if node is None:
            return
        ancestors.append(node)
        if isinstance(node, FieldNode) and node.idents and node.idents[0] == "Thinking":
            _found(ancestors, tags)
        for child in _children(node):
            visit(child)
        ancestors.pop()

    visit(nodes)
    return tags[0], tags[1]


def _children(node: Any) -> list[Any]:
    if isinstance(node, list):
        return node
    if isinstance(node, Branch):
        return [node.pipe, node.body, node.else_body]
    if isinstance(node, (Action, TemplateNode)):
        return [node.pipe]
    if isinstance(node, Pipe):
        return list(node.cmds)
    if isinstance(node, Command):
        return list(node.args)
    return []  # text, fields, variables, chains, constants: leaves, as in Ollama's templateVisit


def _found(ancestors: list[Any], tags: list[str]) -> None:
    ranges = [a for a in ancestors if isinstance(a, Branch) and a.kind == "range"]
    if not ranges or not _uses_field(ranges[-1].pipe, "Messages"):
        return
    for ancestor in reversed(ancestors):
        if isinstance(ancestor, list):
            if ancestor and isinstance(ancestor[0], Text):
                tags[0] = ancestor[0].text.strip(GO_SPACE)
            if ancestor and isinstance(ancestor[-1], Text):
                tags[1] = ancestor[-1].text.strip(GO_SPACE)
            return


def _uses_field(node: Any, name: str) -> bool:
    if isinstance(node, FieldNode):
        return bool(node.idents) and node.idents[0] == name
    return any(_uses_field(c, name) for c in _children(node))
