"""fmt.Sprintf for the verbs templates use: %s %d %v %q %t %f %x %c %%, with width and precision."""

from __future__ import annotations

import re
from typing import Any

from velollm.engine.text.go_template.errors import MAX_TEXT, bounded, too_long
from velollm.engine.text.go_template.values import GoStruct, Named, go_float, sprint_one, type_name, unwrap

_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+|\*)?)?([a-zA-Z%])")


def sprintf(fmt: str, args: list[Any]) -> str:
    out: list[str] = []
    size = 0
    pos, used = 0, 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        flags, width, prec, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        if _too_large(width) or _too_large(prec):  # Go's parsenum gives up on the rest of the format
            out.append("%!(NOVERB)")
            pos = len(fmt)
            break
        if verb == "%":
            out.append("%")
            continue
        if used >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[used]
        used += 1
        text = _verb(verb, arg, int(prec) if prec and prec != "*" else None)
        if width and width != "*" and len(text) < int(width):
            pad = int(width) - len(text)
            text = text + " " * pad if "-" in flags else ("0" if "0" in flags and verb in "dfx" else " ") * pad + text
        size += len(text)
        if size > MAX_TEXT:
            raise too_long()
        out.append(text)
    out.append(fmt[pos:])
    if used < len(args):
        extra = ", ".join(f"{type_name(a)}={sprint_one(a)}" for a in args[used:])
        out.append(f"%!(EXTRA {extra})")
    return bounded("".join(out))


def _too_large(digits: str | None) -> bool:
    """Go's parsenum overflow: a digit read while the number is past 1e6 (so at most 9,999,999)."""
    if not digits or digits == "*":
        return False
    num = 0
    for c in digits:
        if num > 1_000_000:
            return True
        num = num * 10 + int(c)
    return False


def _bad(verb: str, arg: Any) -> str:
    return f"%!{verb}({type_name(arg)}={sprint_one(arg)})"


def _verb(verb: str, arg: Any, prec: int | None) -> str:
    raw = unwrap(arg)
    if verb == "v":
        return sprint_one(arg)
    if verb == "s":
        if isinstance(arg, Named) or isinstance(raw, (str, list, dict, GoStruct)) or raw is None:
            text = sprint_one(arg) if not isinstance(raw, (int, float)) or isinstance(raw, bool) else _bad(verb, arg)
            return text[:prec] if prec is not None else text
        return _bad(verb, arg)
    if verb == "d":
        return str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else _bad(verb, arg)
    if verb == "t":
        return sprint_one(raw) if isinstance(raw, bool) else _bad(verb, arg)
    if verb == "q":
        if isinstance(raw, str):
            return quote(raw)
        if isinstance(raw, int) and not isinstance(raw, bool):
            return "'" + quote(chr(raw))[1:-1].replace("'", "\\'").replace('\\"', '"') + "'"
        return _bad(verb, arg)
    if verb == "f":
        if isinstance(raw, float):
            return f"{raw:.{6 if prec is None else prec}f}"
        return _bad(verb, arg)
    if verb == "g":
        return go_float(raw) if isinstance(raw, float) else _bad(verb, arg)
    if verb == "x":
        if isinstance(raw, int) and not isinstance(raw, bool):
            return format(raw, "x")
        if isinstance(raw, str):
            return raw.encode().hex()
        return _bad(verb, arg)
    if verb == "c":
        return chr(raw) if isinstance(raw, int) and not isinstance(raw, bool) else _bad(verb, arg)
    return _bad(verb, arg)


def quote(s: str) -> str:
    """strconv.Quote: printable runes kept, the rest escaped as Go writes them."""
    out = ['"']
    named = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
             "\\": "\\\\", '"': '\\"'}
    for c in s:
        if c in named:
            out.append(named[c])
        elif c.isprintable():
            out.append(c)
        elif ord(c) < 0x80:
            out.append(f"\\x{ord(c):02x}")
        elif ord(c) < 0x10000:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    out.append('"')
    return "".join(out)
