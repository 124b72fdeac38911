"""text/template's predefined functions (and/or/not are lazy and live in the executor)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus

from velollm.engine.text.go_template.errors import GoTemplateError, bounded
from velollm.engine.text.go_template.printf import sprintf
from velollm.engine.text.go_template.values import sprint, sprint_one, truth, type_name, unwrap

LAZY = ("and", "or")


def _basic(v: Any) -> str | None:
    v = unwrap(v)
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    return None


def eq(arg1: Any, *others: Any) -> bool:
    if not others:
        raise GoTemplateError("missing argument for comparison")
    a = unwrap(arg1)
    if isinstance(a, (list, dict)):
        raise GoTemplateError("error calling eq: invalid type for comparison")
    k1 = _basic(a)
    for other in others:
        b = unwrap(other)
        k2 = _basic(b)
        if k1 != k2:
            if a is not None and b is not None:
                raise GoTemplateError(f"error calling eq: incompatible types for comparison: {type_name(arg1)} and "
                                      f"{type_name(other)}")
            continue
        if k1 is None:
            if isinstance(b, (list, dict)):
                raise GoTemplateError("error calling eq: invalid type for comparison")
            if a is None or b is None:
                if a is None and b is None:
                    return True
                continue
        if a == b:
            return True
    return False


def ne(a: Any, b: Any) -> bool:
    return not eq(a, b)


def _order(name: str, a: Any, b: Any) -> tuple[Any, Any]:
    ka, kb = _basic(a), _basic(b)
    if ka is None or kb is None or ka == "bool" or kb == "bool":
        raise GoTemplateError(f"error calling {name}: invalid type for comparison")
    if ka != kb:
        raise GoTemplateError(f"error calling {name}: incompatible types for comparison: {type_name(a)} and "
                              f"{type_name(b)}")
    return unwrap(a), unwrap(b)


def lt(a: Any, b: Any) -> bool:
    x, y = _order("lt", a, b)
    return x < y


def le(a: Any, b: Any) -> bool:
    x, y = _order("le", a, b)
    return x <= y


def gt(a: Any, b: Any) -> bool:
    x, y = _order("gt", a, b)
    return x > y


def ge(a: Any, b: Any) -> bool:
    x, y = _order("ge", a, b)
    return x >= y


def length(item: Any) -> int:
    v = unwrap(item)
    if v is None and item is not None:  # a typed nil slice or map
        return 0
    if isinstance(v, str):
        return len(v.encode("utf-8"))  # Go counts bytes
    if isinstance(v, (list, dict)):
        return len(v)
    if v is None:
        raise GoTemplateError("error calling len: len of nil pointer")
    raise GoTemplateError(f"error calling len: len of type {type_name(v)}")


def _int_index(v: Any) -> int:
    v = unwrap(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    raise GoTemplateError(f"cannot index slice/array with type {type_name(v)}")


def index(item: Any, *indices: Any) -> Any:
    v = _typed_nil_as_empty(item)
    for i in indices:
        v = unwrap(v)
        if isinstance(v, (list, str)):
            n = _int_index(i)
            if not 0 <= n < len(v if isinstance(v, list) else v.encode()):
                raise GoTemplateError(f"error calling index: index out of range: {n}")
            v = v[n] if isinstance(v, list) else v.encode()[n]
        elif isinstance(v, dict):
            v = v.get(unwrap(i))
        elif v is None:
            raise GoTemplateError("error calling index: index of untyped nil")
        else:
            raise GoTemplateError(f"error calling index: can't index item of type {type_name(v)}")
    return v


def _typed_nil_as_empty(item: Any) -> Any:
    """A typed nil (a field's nil slice or map) indexes and slices as an empty one, as in Go."""
    v = unwrap(item)
    if v is None and item is not None:
        return [] if str(getattr(item, "type_name", "")).startswith("[]") else {}
    return v


def slice_(item: Any, *indices: Any) -> Any:
    v = _typed_nil_as_empty(item)
    if v is None:
        raise GoTemplateError("error calling slice: slice of untyped nil")
    if not isinstance(v, (list, str)):
        raise GoTemplateError(f"error calling slice: can't slice item of type {type_name(v)}")
    if len(indices) > 3 or (len(indices) == 3 and isinstance(v, str)):
        raise GoTemplateError("error calling slice: too many slice indexes")
    size = len(v) if isinstance(v, list) else len(v.encode())
    idx = [_int_index(i) for i in indices]
    lo = idx[0] if idx else 0
    hi = idx[1] if len(idx) > 1 else size
    if not 0 <= lo <= hi <= size:
        raise GoTemplateError(f"error calling slice: index out of range: {hi if hi > size else lo}")
    if isinstance(v, str):
        return v.encode()[lo:hi].decode("utf-8", errors="replace")
    return v[lo:hi]


def println_(*args: Any) -> str:
    return bounded(" ".join(sprint_one(a) for a in args) + "\n")


def not_(v: Any) -> bool:
    return not truth(v)


def printf(fmt: Any, *args: Any) -> str:
    if not isinstance(fmt, str):
        raise GoTemplateError(f"wrong type for value; expected string; got {type_name(fmt)}")
    return sprintf(fmt, list(args))


def _eval_args(args: tuple[Any, ...]) -> str:
    """funcs.go's evalArgs: one string as it is, else fmt.Sprint with each nil as `<no value>`."""
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return bounded(sprint(["<no value>" if a is None else a for a in args]))


_HTML = {"\0": "\ufffd", '"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;"}
_JS = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E", "&": "\\u0026", "=": "\\u003D"}


def html(*args: Any) -> str:
    """HTMLEscaper: NUL and the five HTML specials, as text/template writes them."""
    return bounded("".join(_HTML.get(c, c) for c in _eval_args(args)))


def js(*args: Any) -> str:
    """JSEscaper: quotes, backslash, <>&= and control characters escaped; a non-printable rune as \\uXXXX."""
    out = []
    for c in _eval_args(args):
        if c in _JS:
            out.append(_JS[c])
        elif c < " ":
            out.append(f"\\u00{ord(c):02X}")
        elif c >= "\x80" and not c.isprintable():
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return bounded("".join(out))


def urlquery(*args: Any) -> str:
    """URLQueryEscaper: url.QueryEscape (space as +, all but letters, digits and -_.~ as %XX of UTF-8)."""
    return bounded(quote_plus(_eval_args(args), safe=""))


def call(*args: Any, callee: str = "") -> Any:
    """`call fn args...`: Ollama passes templates no function values, so every call fails as Go's does. `callee`:
    the function argument as the template wrote it, which the executor passes (as Go's evalCall does)."""
    if not args:
        raise GoTemplateError("wrong number of args for call: want at least 1 got 0")
    if args[0] is None:
        raise GoTemplateError("error calling call: call of nil")
    raise GoTemplateError(f"error calling call: non-function {callee} of type {type_name(args[0])}")


BUILTINS: dict[str, Callable[..., Any]] = {
    "eq": eq, "ne": ne, "lt": lt, "le": le, "gt": gt, "ge": ge, "len": length, "index": index, "slice": slice_,
    "not": not_, "print": lambda *a: bounded(sprint(list(a))), "printf": printf, "println": println_,
    "html": html, "js": js, "urlquery": urlquery, "call": call,
}
NAMES = frozenset(BUILTINS) | frozenset(LAZY)
