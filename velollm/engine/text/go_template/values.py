"""Go values as the interpreter sees them, and how Go's fmt and encoding/json print them.

Python stands in for Go: str, bool, int, float, None (nil), list (slice), dict (map[string]...),
`GoStruct` (a struct, field order kept) and `Named` (a named slice/map type with a String method).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


@dataclass
class GoStruct:
    type_name: str
    fields: dict[str, Any]
    json_fields: list[tuple[str, str, bool]] | None = None  # (json key, field, omitempty); None: field names


@dataclass
class Named:
    type_name: str
    value: Any  # the underlying list / dict / None (a nil slice or map)
    string: Callable[[Any], str] = field(repr=False, default=lambda v: sprint_one(v))
    to_json: Callable[[Any], str] | None = field(repr=False, default=None)


class _NoValue:
    """Go's invalid reflect.Value: the dot of `{{template "name"}}` (no pipeline). It prints `<no value>`, is
    false, its fields are no value too, and a function gets it as nil."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return "<no value>"


NO_VALUE = _NoValue()


def nil_slice(type_name: str) -> Named:
    """A nil slice in a struct field: prints `[]`, is false and empty, marshals as `null`."""
    return Named(type_name, None, lambda _: "[]", lambda _: "null")


def unwrap(v: Any) -> Any:
    return v.value if isinstance(v, Named) else v


def type_name(v: Any) -> str:
    if isinstance(v, Named):
        return v.type_name
    if isinstance(v, GoStruct):
        return v.type_name
    return {str: "string", bool: "bool", int: "int", float: "float64", list: "[]interface {}",
            dict: "map[string]interface {}", type(None): "<nil>"}.get(type(v), type(v).__name__)


def truth(v: Any) -> bool:
    """Go's template truth: false, 0, nil, and empty strings, slices and maps are false; structs are true."""
    v = unwrap(v)
    if isinstance(v, GoStruct):
        return True
    return bool(v)


def go_float(f: float, fmt: str = "g") -> str:
    """strconv.FormatFloat(f, fmt, -1, 64): the shortest digits, %e beyond Go's exponent limits."""
    if math.isnan(f):
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if str(f).startswith("-") else "0"
    sign, digits, exp = Decimal(repr(f)).normalize().as_tuple()
    ds = "".join(map(str, digits))
    point = len(ds) + int(exp)  # decimal point position in ds
    x = point - 1
    # %v ('g', shortest) uses %e below 1e-4 and from 1e6; encoding/json below 1e-6 and from 1e21.
    use_e = x < -4 or x >= 6 if fmt == "g" else x < -6 or x >= 21
    out = _e_form(ds, x, fmt == "json") if use_e else _f_form(ds, point)
    return ("-" if sign else "") + out


def _f_form(ds: str, point: int) -> str:
    if point <= 0:
        return "0." + "0" * -point + ds
    if point >= len(ds):
        return ds + "0" * (point - len(ds))
    return ds[:point] + "." + ds[point:]


def _e_form(ds: str, x: int, json_style: bool) -> str:
    mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
    exp = f"{abs(x)}" if json_style and x < 0 else f"{abs(x):02d}"  # json trims e-07 to e-7
    return f"{mant}e{'-' if x < 0 else '+'}{exp}"


def sprint_one(v: Any, depth: int = 0) -> str:
    """fmt's %v of one value."""
    if isinstance(v, Named):
        return v.string(v.value)
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return go_float(v)
    if isinstance(v, list):
        return "[" + " ".join(sprint_one(x, depth + 1) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{sprint_one(k)}:{sprint_one(v[k], depth + 1)}" for k in sorted(v)) + "]"
    if isinstance(v, GoStruct):
        return "{" + " ".join(sprint_one(x, depth + 1) for x in v.fields.values()) + "}"
    return str(v)


def sprint(args: list[Any]) -> str:
    """fmt.Sprint: a space between operands when neither is a string."""
    out = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(sprint_one(a))
    return "".join(out)


def go_json(v: Any) -> str:
    """encoding/json.Marshal: sorted map keys, no spaces, <>& and U+2028/9 escaped."""
    return _escape_html(_json(v))


def _json(v: Any) -> str:
    if isinstance(v, Named):
        return v.to_json(v.value) if v.to_json is not None else _json(v.value)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return go_float(v, "json")
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ",".join(_json(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{json.dumps(str(k), ensure_ascii=False)}:{_json(v[k])}" for k in sorted(v)) + "}"
    if isinstance(v, GoStruct):
        spec = v.json_fields or [(name, name, False) for name in v.fields]
        parts = [f"{json.dumps(key)}:{_json(v.fields[name])}" for key, name, omit in spec
                 if not (omit and _empty(v.fields[name]))]
        return "{" + ",".join(parts) + "}"
    raise TypeError(f"json: unsupported type {type(v).__name__}")


def _empty(v: Any) -> bool:
    v = unwrap(v)
    return v is None or v is False or v == 0 or (isinstance(v, (str, list, dict)) and not v)


def _escape_html(s: str) -> str:
    return (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
