"""Go text/template's parser: tokens -> a list of nodes (nodes.py), with Go's parse errors."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from velollm.engine.text.go_template.errors import GoTemplateError
from velollm.engine.text.go_template.lexer import Token, tokenize
from velollm.engine.text.go_template.literals import constant
from velollm.engine.text.go_template.nodes import (
    Action,
    Branch,
    ChainNode,
    Command,
    ConstNode,
    DotNode,
    FieldNode,
    IdentifierNode,
    LoopControl,
    NilNode,
    Pipe,
    TemplateNode,
    TemplateSet,
    Text,
    VariableNode,
    is_empty_tree,
)
from velollm.engine.text.go_template.printf import quote

# Actions nested in actions (if/range/with/block bodies, `else if` chains, parenthesized pipelines): Go's parser
# has no bound; Python's stack has, and every walk of the tree after the parse (Vars, the think tags, the legacy
# path's copy, execution) recurses per level, some several frames deep. Real templates nest under ten.
MAX_NESTING = 32


def parse(src: str, funcs: Collection[str]) -> TemplateSet:
    """The templates of `src` (the main one, its defines and blocks); a function name outside `funcs` is Go's
    `function "x" not defined`."""
    parser = _Parser(tokenize(src), funcs)
    try:
        nodes, end = parser.list(0)
    except RecursionError:  # Go's parser has no bound; Python's stack has (real templates nest a few deep)
        raise GoTemplateError("template: nesting too deep") from None
    if end is not None:
        raise parser.error(f"unexpected {{{{{end}}}}}")
    parser.add("", nodes)
    return TemplateSet(parser.trees)


def _item(tok: Token) -> str:
    """How Go's parse errors name a token (lex item.String)."""
    if tok.kind == "dot" or (tok.kind == "keyword" and tok.value not in ("true", "false")):
        return f"<{tok.value}>"
    value = f"`{tok.value}`" if tok.kind == "rawstring" else tok.value
    return quote(value[:10]) + "..." if len(value) > 10 else quote(value)


class _Parser:
    def __init__(self, tokens: list[Token], funcs: Collection[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.funcs = funcs
        self.vars = ["$"]
        self.trees: dict[str, list[Any]] = {}
        self.nesting = 0  # actions open around the one being parsed: bounded by MAX_NESTING

    def nested(self) -> None:
        """One level deeper (undone by the caller's `self.nesting -= 1`); past MAX_NESTING a clear error."""
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise self.error(f"nesting too deep (over {MAX_NESTING} levels of actions)")

    def error(self, message: str) -> GoTemplateError:
        line = self.tokens[min(self.pos, len(self.tokens) - 1)].line if self.tokens else 1
        return GoTemplateError(f"template: :{line}: {message}")

    def peek(self, skip_space: bool = True) -> Token | None:
        while skip_space and self.pos < len(self.tokens) and self.tokens[self.pos].kind == "space":
            self.pos += 1
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def next(self, skip_space: bool = True) -> Token:
        tok = self.peek(skip_space)
        if tok is None:
            raise self.error("unexpected EOF")
        self.pos += 1
        return tok

    def list(self, depth: int, loop: bool = False) -> tuple[list[Any], str | None]:
        """Nodes up to `{{end}}` or `{{else}}` (returned as the terminator) or EOF (None)."""
        nodes: list[Any] = []
        while (tok := self.peek(False)) is not None:
            self.pos += 1
            if tok.kind == "text":
                nodes.append(Text(tok.value))
                continue
            key = self.peek()
            if depth == 0 and key is not None and key.kind == "keyword" and key.value == "define":
                self.pos += 1  # a definition only at the top of the source, as in Go
                self.definition()
                continue
            if key is not None and key.kind == "keyword" and key.value in ("end", "else"):
                self.pos += 1
                if not (key.value == "else" and self.peek_chain()):  # `else if`/`else with`: the keyword pending
                    self.close(key.value)  # Go's endControl / elseControl, wherever it stands
                if depth == 0:
                    raise self.error(f"unexpected {{{{{key.value}}}}}")
                return nodes, key.value
            nodes.append(self.action(depth, loop))
        if depth:
            raise self.error("unexpected EOF")
        return nodes, None

    def close(self, context: str) -> None:
        tok = self.next()
        if tok.kind != "close":
            raise self.error(f"unexpected {_item(tok)} in {context}")

    def peek_chain(self) -> bool:
        """After `else`: an `if` or `with` that Go's elseControl leaves pending."""
        return self.peek_keyword("if") or self.peek_keyword("with")

    def peek_keyword(self, word: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "keyword" and tok.value == word

    def action(self, depth: int, loop: bool) -> Any:
        tok = self.peek()
        if tok is not None and tok.kind == "keyword" and tok.value in ("if", "range", "with"):
            self.pos += 1
            return self.branch(tok.value, depth, loop)
        if tok is not None and tok.kind == "keyword" and tok.value in ("break", "continue"):
            self.pos += 1
            self.close(f"{{{{{tok.value}}}}}")
            if not loop:
                raise self.error(f"{{{{{tok.value}}}}} outside {{{{range}}}}")
            return LoopControl(tok.value)
        if tok is not None and tok.kind == "keyword" and tok.value == "template":
            self.pos += 1
            return self.template()
        if tok is not None and tok.kind == "keyword" and tok.value == "block":
            self.pos += 1
            return self.block()
        if tok is not None and tok.kind == "keyword" and tok.value == "define":
            raise self.error("unexpected <define> in command")
        return Action(self.pipeline("command", allow_decl=True))

    def definition(self) -> None:
        """{{define "name"}} body {{end}}: a template of the set."""
        tok = self.next()
        if tok.kind not in ("string", "rawstring"):
            raise self.error(f"unexpected {_item(tok)} in define clause")
        name = str(constant(tok.kind, tok.value))
        tok = self.next()
        if tok.kind != "close":
            raise self.error(f"unexpected {_item(tok)} in define clause")
        self.add(name, self.tree_body("define clause"))

    def template(self) -> TemplateNode:
        """{{template "name"}} or {{template "name" pipeline}}."""
        at = self._at()
        name = self.template_name("template clause")
        tok = self.peek()
        if tok is not None and tok.kind == "close":
            self.pos += 1
            return TemplateNode(name, None, at)
        return TemplateNode(name, self.pipeline("template clause", allow_decl=True), at)

    def block(self) -> TemplateNode:
        """{{block "name" pipeline}} body {{end}}: defines `name` and runs it here."""
        at = self._at()
        name = self.template_name("block clause")
        pipe = self.pipeline("block clause", allow_decl=True)
        self.add(name, self.tree_body("block clause"))
        return TemplateNode(name, pipe, at)

    def _at(self) -> int:
        """Where the next token (not a space) starts: a node's position, as Go's parser takes it."""
        tok = self.peek()
        return tok.pos if tok is not None else -1

    def template_name(self, context: str) -> str:
        tok = self.next()
        if tok.kind not in ("string", "rawstring"):
            raise self.error(f"unexpected {_item(tok)} in {context}")
        return str(constant(tok.kind, tok.value))

    def tree_body(self, context: str) -> list[Any]:
        """A define's or block's body: a tree of its own, so only `$` is declared in it."""
        outer, self.vars = self.vars, ["$"]
        self.nested()
        try:
            body, end = self.list(1)
        finally:
            self.vars = outer
            self.nesting -= 1
        if end != "end":
            raise self.error(f"unexpected {{{{{end}}}}} in {context}")
        return body

    def add(self, name: str, nodes: list[Any]) -> None:
        """parse.Tree.add: an empty template yields to another of its name; two non-empty ones are an error."""
        known = self.trees.get(name)
        if known is None or is_empty_tree(known):
            self.trees[name] = nodes
        elif not is_empty_tree(nodes):
            raise self.error(f"template: multiple definition of template {quote(name)}")

    def branch(self, kind: str, depth: int, loop: bool) -> Branch:
        self.nested()
        try:
            return self._branch(kind, depth, loop)
        finally:
            self.nesting -= 1

    def _branch(self, kind: str, depth: int, loop: bool) -> Branch:
        mark = len(self.vars)
        pipe = self.pipeline(kind, allow_decl=True, range_decl=kind == "range")
        body, end = self.list(depth + 1, loop or kind == "range")
        else_body = None
        if end == "else":
            if kind in ("if", "with") and self.peek_keyword(kind):
                self.pos += 1
                else_body = [self.branch(kind, depth, loop)]  # `else if`/`else with` share the outer `end`
            elif self.peek_chain():  # Go joins `else if` to an `if` only, `else with` (Go 1.23) to a `with`
                raise self.error(f"unexpected <{self.peek().value}> in input")
            else:
                else_body, end = self.list(depth + 1, loop)
                if end != "end":
                    raise self.error(f"expected end; found {{{{{end}}}}}")
        del self.vars[mark:]
        return Branch(kind, pipe, body, else_body)

    def pipeline(self, context: str, allow_decl: bool, range_decl: bool = False) -> Pipe:
        at = self._at()
        decl, is_assign = self.declarations(allow_decl, range_decl)
        cmds: list[Command] = []
        while True:
            tok = self.peek()
            if tok is None:
                raise self.error("unclosed action")
            if tok.kind in ("close", "rparen"):
                if tok.kind == "close":
                    self.pos += 1
                break
            cmds.append(self.command())
            tok = self.peek()
            if tok is not None and tok.kind == "pipe":
                self.pos += 1
                if self.peek() is not None and self.peek().kind in ("close", "rparen"):  # type: ignore[union-attr]
                    raise self.error("missing command")
        if not cmds:
            raise self.error(f"missing value for {context}")
        for cmd in cmds[1:]:
            if isinstance(cmd.args[0], (ConstNode, NilNode, DotNode)):
                raise self.error(f"non executable command in pipeline stage {cmds.index(cmd) + 1}")
        return Pipe(cmds, decl, is_assign, at)

    def declarations(self, allow: bool, range_decl: bool) -> tuple[list[str], bool]:
        start = self.pos
        tok = self.peek()
        if not allow or tok is None or tok.kind != "var":
            return [], False
        names = [tok.value]
        self.pos += 1
        nxt = self.peek()
        if nxt is not None and nxt.kind == "comma" and range_decl:
            self.pos += 1
            second = self.next()
            if second.kind != "var":
                raise self.error("range can only initialize variables")
            names.append(second.value)
            nxt = self.peek()
        if nxt is not None and nxt.kind in ("declare", "assign"):
            self.pos += 1
            if nxt.kind == "declare":
                self.vars.extend(names)
            else:
                for name in names:
                    self.check_var(name)
            return names, nxt.kind == "assign"
        self.pos = start
        return [], False

    def check_var(self, name: str) -> None:
        if name not in self.vars:
            raise self.error(f"undefined variable \"{name}\"")

    def command(self) -> Command:
        at = self._at()
        args: list[Any] = []
        while True:
            tok = self.peek(False)
            if tok is None:
                raise self.error("unclosed action")
            if tok.kind == "space":
                self.pos += 1
                continue
            if tok.kind in ("close", "rparen", "pipe"):
                break
            args.append(self.operand())
        if not args:
            raise self.error("empty command")
        return Command(args, at)

    def operand(self) -> Any:
        node = self.term()
        fields: list[str] = []
        chain_at = -1
        while (tok := self.peek(False)) is not None and tok.kind == "field":
            self.pos += 1
            chain_at = tok.pos if not fields else chain_at
            fields.append(tok.value[1:])
        if not fields:
            return node
        # Go's parser makes a chain first, at its first field, and keeps that position when it folds the chain
        # back into the field or variable (`.A.B` is at `.B`)
        if isinstance(node, FieldNode):
            return FieldNode(node.idents + fields, chain_at)
        if isinstance(node, VariableNode):
            return VariableNode(node.idents + fields, chain_at)
        if isinstance(node, (ConstNode, NilNode, DotNode)):
            raise self.error("unexpected . after term")
        return ChainNode(node, fields, chain_at)

    def term(self) -> Any:
        tok = self.next(False)
        kind, value = tok.kind, tok.value
        if kind == "field":
            return FieldNode([value[1:]], tok.pos)
        if kind == "var":
            self.check_var(value)
            return VariableNode([value], tok.pos)
        if kind == "dot":
            return DotNode(tok.pos)
        if kind == "ident":
            if value not in self.funcs:
                raise self.error(f"function \"{value}\" not defined")
            return IdentifierNode(value, tok.pos)
        if kind == "keyword" and value in ("true", "false"):
            return ConstNode(value == "true", tok.pos)
        if kind == "keyword" and value == "nil":
            return NilNode(tok.pos)
        if kind == "lparen":
            self.nested()
            try:
                pipe = self.pipeline("parenthesized pipeline", allow_decl=False)
            finally:
                self.nesting -= 1
            close = self.next()
            if close.kind != "rparen":
                raise self.error("unclosed left paren")
            return pipe
        if kind in ("string", "rawstring", "char", "number"):
            try:
                return ConstNode(constant(kind, value), tok.pos)
            except ValueError as e:
                raise self.error(str(e)) from None
        raise self.error(f"unexpected {value!r} in operand")
