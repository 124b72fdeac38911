"""Executing a parsed Go template against Go-shaped data (values.py), with Go's semantics."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from velollm.engine.text.go_template.builtins import BUILTINS, LAZY
from velollm.engine.text.go_template.errors import MAX_TEXT, GoTemplateError, too_long
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
    Text,
    VariableNode,
    go_text,
)
from velollm.engine.text.go_template.printf import quote
from velollm.engine.text.go_template.values import NO_VALUE, GoStruct, sprint_one, truth, type_name, unwrap

_MISSING = object()
MAX_STEPS = 1_000_000  # a template from a request must not spin the server
# Templates calling templates: Go stops at 100000 (maxExecDepth); Python's stack ends far sooner, so VeloLLM
# stops here, in Go's words (a real template nests a few deep; a recursive one ends on a condition).
MAX_TEMPLATE_DEPTH = 100


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def execute(nodes: list[Any], data: Any, funcs: Mapping[str, Callable[..., Any]],
            templates: Mapping[str, list[Any]] | None = None, source: str = "") -> str:
    """The text `nodes` print for `data` (Go's Template.Execute with missingkey=zero); `{{template}}` finds
    its name in `templates` (the parse's TemplateSet.trees; none given: only `nodes`, as ""). An error names
    where it happened in `source` (the parsed text), as Go's do: `template: :1:3: executing "" at <.A.B>: ...`."""
    state = _State(data, {**BUILTINS, **funcs}, {"": nodes} if templates is None else templates, source)
    try:
        state.walk_list(nodes, data)
    except RecursionError:  # nodes or data nested past Python's stack
        raise GoTemplateError("template: nesting too deep") from None
    except GoTemplateError as e:
        raise state.located(e) from None
    return "".join(state.out)


def location(source: str, pos: int) -> str:
    """Go's ErrorContext location of a node: its line and its byte column, from 0 (ParseName is Ollama's "")."""
    start = source.rfind("\n", 0, pos) + 1
    line = source.count("\n", 0, pos) + 1
    return f":{line}:{len(source[start:pos].encode('utf-8', 'surrogatepass'))}"


class _State:
    def __init__(self, data: Any, funcs: Mapping[str, Callable[..., Any]],
                 templates: Mapping[str, list[Any]], source: str = "") -> None:
        self.source = source
        self.name = ""  # the template executing (Go's s.tmpl), and the node at hand (s.node): errors name both
        self.node: Any = None
        self.vars: list[list[Any]] = [["$", data]]
        self.funcs = funcs
        self.templates = templates
        self.depth = 0  # templates called within templates
        self.out: list[str] = []
        self.size = 0  # characters in `out`: bounded by MAX_TEXT
        self.steps = 0

    def located(self, e: GoTemplateError) -> GoTemplateError:
        """Go's state.errorf prefix on an exec error: where, in which template, at which node. VeloLLM's own
        bounds (and errors located already) start with `template:` and stay as they are."""
        message = str(e)
        if message.startswith("template:"):
            return e
        pos = getattr(self.node, "pos", -1)
        if pos < 0 or not self.source:
            return GoTemplateError(f"template: {self.name}: {message}")
        where = location(self.source, pos)
        return GoTemplateError(f"template: {where}: executing {quote(self.name)} at <{go_text(self.node)}>: {message}")

    def emit(self, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_TEXT:
            raise too_long()
        self.out.append(text)

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise GoTemplateError("template: execution exceeded the step limit")

    def walk_list(self, nodes: list[Any], dot: Any) -> None:
        for node in nodes:
            self.walk(node, dot)

    def walk(self, node: Any, dot: Any) -> None:
        self.step()
        if isinstance(node, Text):
            self.emit(node.text)
        elif isinstance(node, Action):
            value = self.pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.emit(printable(value))
        elif isinstance(node, Branch):
            self.branch(node, dot)
        elif isinstance(node, LoopControl):
            raise _Break() if node.kind == "break" else _Continue()
        elif isinstance(node, TemplateNode):
            self.template(node, dot)

    def template(self, node: TemplateNode, dot: Any) -> None:
        """walkTemplate: the named template on the pipeline's value, which is its `.` and `$` (it sees no other
        variable; those the pipeline declares stay the caller's)."""
        self.node = node
        nodes = self.templates.get(node.name)
        if nodes is None:
            raise GoTemplateError(f"template {quote(node.name)} not defined")
        if self.depth == MAX_TEMPLATE_DEPTH:
            raise GoTemplateError(f"exceeded maximum template depth ({MAX_TEMPLATE_DEPTH})")
        value = NO_VALUE if node.pipe is None else self.pipeline(dot, node.pipe)
        outer, self.vars = self.vars, [["$", value]]
        caller, self.name = self.name, node.name
        self.depth += 1
        try:
            self.walk_list(nodes, value)
        except GoTemplateError as e:
            raise self.located(e) from None  # here, while the called template is the one executing
        finally:
            self.vars = outer
            self.name = caller
            self.depth -= 1

    def branch(self, node: Branch, dot: Any) -> None:
        mark = len(self.vars)
        try:
            if node.kind == "range":
                self.range_(node, dot)
                return
            value = self.pipeline(dot, node.pipe)
            if truth(value):
                self.walk_list(node.body, value if node.kind == "with" else dot)
            elif node.else_body is not None:
                self.walk_list(node.else_body, dot)
        finally:
            del self.vars[mark:]

    def range_(self, node: Branch, dot: Any) -> None:
        value = unwrap(self.pipeline(dot, Pipe(node.pipe.cmds)))
        items: Iterable[tuple[Any, Any]]
        if isinstance(value, dict):
            items = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, list):
            items = enumerate(value)
        elif value is None or value is NO_VALUE:
            items = ()
        elif isinstance(value, int) and not isinstance(value, bool):  # Go 1.22: 0..n-1, the element only
            if len(node.pipe.decl) > 1:
                raise GoTemplateError(f"can't use {value} to iterate over more than one variable")
            items = ((i, i) for i in range(value))  # lazily: the step bound ends `{{range 1000000000000}}`
        else:
            raise GoTemplateError(f"range can't iterate over {sprint_one(value)}")
        ran = False
        mark = len(self.vars)
        for key, elem in items:
            ran = True
            self.step()  # an iteration counts, its body empty or not
            decl = node.pipe.decl
            if decl:
                values = [elem] if len(decl) == 1 else [key, elem]
                for name, v in zip(decl, values):
                    if node.pipe.is_assign:
                        self.set_var(name, v)
                    else:
                        self.vars.append([name, v])
            try:
                self.walk_list(node.body, elem)
            except _Break:
                break
            except _Continue:
                pass
            finally:
                del self.vars[mark:]
        if not ran and node.else_body is not None:
            self.walk_list(node.else_body, dot)

    def set_var(self, name: str, value: Any) -> None:
        for slot in reversed(self.vars):
            if slot[0] == name:
                slot[1] = value
                return
        raise GoTemplateError(f"undefined variable: {name}")

    def var_node(self, node: VariableNode) -> Any:
        self.node = node
        return self.var(node.idents[0])

    def var(self, name: str) -> Any:
        for slot in reversed(self.vars):
            if slot[0] == name:
                return slot[1]
        raise GoTemplateError(f"undefined variable: {name}")

    def pipeline(self, dot: Any, pipe: Pipe) -> Any:
        self.node = pipe
        value: Any = _MISSING
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)
        for name in pipe.decl:
            if pipe.is_assign:
                self.set_var(name, value)
            else:
                self.vars.append([name, value])
        return value

    def command(self, dot: Any, cmd: Command, final: Any) -> Any:
        first = cmd.args[0]
        if not isinstance(first, Pipe):
            self.node = first  # Go's s.at in evalCommand and the evalFieldNode/evalFunction/... it calls
        if isinstance(first, FieldNode):
            return self.fields(dot, dot, first.idents, cmd.args, final)
        if isinstance(first, VariableNode):
            value = self.var_node(first)
            if len(first.idents) == 1:
                _not_a_function(cmd.args, final)
                return value
            return self.fields(dot, value, first.idents[1:], cmd.args, final)
        if isinstance(first, ChainNode):
            return self.fields(dot, self.arg(dot, first.node), first.fields, cmd.args, final)
        if isinstance(first, IdentifierNode):
            return self.call(dot, first, cmd.args[1:], final, cmd)
        _not_a_function(cmd.args, final)
        if isinstance(first, NilNode):
            raise GoTemplateError("nil is not a command")
        return self.arg(dot, first)

    def fields(self, dot: Any, receiver: Any, idents: list[str], args: list[Any], final: Any) -> Any:
        for i, name in enumerate(idents):
            is_last = i == len(idents) - 1
            if is_last and (len(args) > 1 or final is not _MISSING):
                raise GoTemplateError(f"{name} has arguments but cannot be invoked as function")
            receiver = field(receiver, name)
        return receiver

    def call(self, dot: Any, ident: IdentifierNode, arg_nodes: list[Any], final: Any, cmd: Any) -> Any:
        """evalFunction + evalCall: `cmd` is the command that calls it (the identifier alone as an argument),
        which Go's `error calling` errors name; its argument count errors name the identifier."""
        name = ident.name
        self.node = ident
        if name in LAZY:
            return self.lazy(dot, name, arg_nodes, final)
        fn = self.funcs.get(name)
        if fn is None:
            raise GoTemplateError(f"\"{name}\" is not a defined function")
        args = [self.arg(dot, a) for a in arg_nodes]
        if final is not _MISSING:
            args.append(final)
        if name == "len" and any(a is NO_VALUE for a in args):  # Go's len reads the invalid value's type
            self.node = cmd
            raise GoTemplateError("error calling len: reflect: call of reflect.Value.Type on zero Value")
        args = [None if a is NO_VALUE else a for a in args]  # Go passes an invalid value as a nil interface
        named = {"callee": _callee(arg_nodes, final)} if name == "call" and fn is BUILTINS["call"] else {}
        try:
            return fn(*args, **named)
        except TypeError as e:
            self.node = ident
            raise GoTemplateError(f"wrong number of args for {name}: {e}") from None
        except (ValueError, KeyError, IndexError, AttributeError) as e:
            self.node = cmd
            raise GoTemplateError(f"error calling {name}: {e}") from None
        except GoTemplateError as e:
            self.node = ident if str(e).startswith("wrong number of args") else cmd
            raise

    def lazy(self, dot: Any, name: str, arg_nodes: list[Any], final: Any) -> Any:
        thunks: list[Callable[[], Any]] = [lambda a=a: self.arg(dot, a) for a in arg_nodes]
        if final is not _MISSING:
            thunks.append(lambda: final)
        if not thunks:
            raise GoTemplateError(f"wrong number of args for {name}: want at least 1 got 0")
        value: Any = None
        for thunk in thunks:
            value = thunk()
            if truth(value) == (name == "or"):
                return value
        return value

    def arg(self, dot: Any, node: Any) -> Any:
        self.node = node  # Go's evalArg
        if isinstance(node, DotNode):
            return dot
        if isinstance(node, NilNode):
            return None
        if isinstance(node, ConstNode):
            return node.value
        if isinstance(node, FieldNode):
            return self.fields(dot, dot, node.idents, [node], _MISSING)
        if isinstance(node, VariableNode):
            value = self.var_node(node)
            return self.fields(dot, value, node.idents[1:], [node], _MISSING) if len(node.idents) > 1 else value
        if isinstance(node, ChainNode):
            return self.fields(dot, self.arg(dot, node.node), node.fields, [node], _MISSING)
        if isinstance(node, Pipe):
            return self.pipeline(dot, node)
        if isinstance(node, IdentifierNode):
            return self.call(dot, node, [], _MISSING, node)
        raise GoTemplateError(f"can't handle {node!r} as an argument")


def _callee(arg_nodes: list[Any], final: Any) -> str:
    """What Go's evalCall names `call`'s function by: the first argument's text, or a piped value's
    reflect.Value.String (a string itself, `<T Value>` otherwise)."""
    if arg_nodes:
        return go_text(arg_nodes[0])
    return final if isinstance(final, str) else f"<{type_name(final)} Value>"


def _not_a_function(args: list[Any], final: Any) -> None:
    if len(args) > 1 or final is not _MISSING:
        raise GoTemplateError(f"can't give argument to non-function {args[0]!r}")


def field(receiver: Any, name: str) -> Any:
    """.Name of `receiver`: a struct's field, a map's key (missing: nil), nil for nil."""
    if receiver is NO_VALUE:  # Go's evalField on an invalid receiver: no value, not an error
        return NO_VALUE
    value = unwrap(receiver)
    if value is None:
        if receiver is None:  # a nil interface (e.g. a missing key's zero value)
            raise GoTemplateError(f"nil pointer evaluating interface {{}}.{name}")
        return None  # a typed nil map: every key is missing
    if isinstance(value, GoStruct):
        if name in value.fields:
            return value.fields[name]
        raise GoTemplateError(f"can't evaluate field {name} in type {value.type_name}")
    if isinstance(value, dict):
        return value.get(name)
    raise GoTemplateError(f"can't evaluate field {name} in type {type_name(receiver)}")


def printable(value: Any) -> str:
    """How an action prints its value: a nil interface is `<no value>`."""
    if value is None:
        return "<no value>"
    return sprint_one(value)
