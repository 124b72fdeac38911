"""bound_schema: a JSON Schema narrowed so that every value it admits is short.

Under a grammar, a model that does not want to stop (a random one, or a confused one inside a long
string) runs on until max_tokens and the answer is cut mid-JSON. Capping array and map sizes,
number widths, formats and patterns makes the grammar end; plain strings stay uncapped in the
grammar (a capped string with escapes is ~1000x slower to mask in xgrammar 0.2.x) and get a
character cap that StringWatchdog enforces while decoding. Caps come from a budget derived from
the request's max_tokens. The result only narrows the schema: whatever it admits, the original
admits too, so validation uses the original. Formats and patterns that xgrammar would expand
without bound are replaced by bounded patterns (it ignores maxLength next to them).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GrammarLimits:
    max_string_length: int = 2048  # cap on strings without maxLength, when the budget allows
    min_string_length: int = 8  # floor of that cap when the budget is tight
    max_array_items: int = 32
    max_object_properties: int = 16  # for maps (additionalProperties / patternProperties)
    max_integer_digits: int = 12
    any_value_depth: int = 2  # nesting of untyped values ({} / json_object)
    max_whitespace: int | None = 2  # whitespace characters between JSON tokens; None: unlimited

    def __post_init__(self) -> None:
        if not 1 <= self.min_string_length <= self.max_string_length:
            raise ValueError("need 1 <= min_string_length <= max_string_length")
        if self.max_array_items < 1 or self.max_object_properties < 1 or self.max_integer_digits < 1:
            raise ValueError("item, property and digit limits must be at least 1")


_D, _H = r"[0-9]", r"[0-9a-f]"
_DATE = r"[12][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"  # day <= 28: valid in every month
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
_LABEL = r"[a-z0-9]([a-z0-9-]{0,%d}[a-z0-9])?"


def _format_pattern(fmt: str, n: int) -> str | None:
    label = _LABEL % max(1, min(n, 61))
    host = rf"{label}(\.{label}){{0,3}}"
    patterns = {
        "date": _DATE,
        "time": _TIME,
        "date-time": rf"{_DATE}T{_TIME}",
        "email": rf"[a-z0-9][a-z0-9._+-]{{0,{n}}}@{label}\.[a-z]{{2,6}}",
        "idn-email": rf"[a-z0-9][a-z0-9._+-]{{0,{n}}}@{label}\.[a-z]{{2,6}}",
        "hostname": host,
        "idn-hostname": host,
        "uri": rf"https?://{host}(/[A-Za-z0-9._~-]{{1,{n}}}){{0,4}}",
        "iri": rf"https?://{host}(/[A-Za-z0-9._~-]{{1,{n}}}){{0,4}}",
        "uri-reference": rf"(https?://{host})?(/[A-Za-z0-9._~-]{{1,{n}}}){{1,4}}",
        "uuid": rf"{_H}{{8}}-{_H}{{4}}-{_H}{{4}}-{_H}{{4}}-{_H}{{12}}",
        "ipv4": r"((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])",
        "duration": r"P([0-9]{1,4}D)?T([0-9]{1,2}H)?([0-9]{1,2}M)?[0-9]{1,2}S",
    }
    return patterns.get(fmt)


def bound_regex(pattern: str, n: int) -> str:
    """`pattern` with unbounded quantifiers (`*`, `+`, `{m,}`) capped at `n` repetitions."""
    # Escapes are copied as two-character pieces, so out[-1] == ")" means an unescaped group end.
    out, i, in_class = [], 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
            out.append(ch)
        elif ch == "[":
            in_class = True
            out.append(ch)
        elif ch in "*+":
            out.append("{0,%d}" % n if ch == "*" else "{1,%d}" % n)
        elif ch == "?" and out and out[-1] == ")":
            out.append("{0,1}")  # xgrammar 0.2.x mis-reads an optional group that holds {m,n}
        elif ch == "{" and (m := re.match(r"\{(\d+),\}", pattern[i:])):
            low = int(m.group(1))
            out.append("{%d,%d}" % (low, max(low, n)))
            i += m.end()
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def any_value_schema(depth: int, string_cap: int, limits: GrammarLimits) -> dict[str, Any]:
    """A bounded stand-in for "any JSON value" (untyped schemas, json_object members)."""
    bound = 10**limits.max_integer_digits - 1
    scalars: list[dict[str, Any]] = [
        {"type": "string"},
        {"type": "number", "minimum": -bound, "maximum": bound},
        {"type": "boolean"},
        {"type": "null"},
    ]
    if depth > 0:
        inner = any_value_schema(depth - 1, string_cap, limits)
        scalars.append({"type": "array", "items": inner, "maxItems": min(limits.max_array_items, 8)})
        scalars.append(_map_schema(inner, string_cap, limits))
    return {"anyOf": scalars}


def _map_schema(values: dict[str, Any], string_cap: int, limits: GrammarLimits) -> dict[str, Any]:
    # Keys are strings: the watchdog caps them (a maxLength here would cost mask time).
    return {"type": "object", "additionalProperties": values, "maxProperties": min(limits.max_object_properties, 8)}


def json_object_schema(limits: GrammarLimits, string_cap: int) -> dict[str, Any]:
    """`response_format: json_object` / Ollama `format: "json"`: any object, bounded."""
    return _map_schema(any_value_schema(limits.any_value_depth - 1, string_cap, limits), string_cap, limits)


class _Bounder:
    def __init__(self, limits: GrammarLimits, string_cap: int) -> None:
        self.limits = limits
        self.cap = string_cap
        self.num_strings = 0  # unbounded strings met, weighted by repetition (to size the cap)
        self.fixed = 0  # characters of everything else (keys, numbers, formats), weighted alike
        self.weight = 1

    def node(self, schema: Any) -> Any:
        if schema is True or schema == {}:
            return any_value_schema(self.limits.any_value_depth, self.cap, self.limits)
        if not isinstance(schema, dict):
            return schema
        out = dict(schema)
        for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            if isinstance(out.get(key), list):
                out[key] = [self.node(s) for s in out[key]]
        self.fixed += self.weight * sum(len(k) + 4 for k in out.get("properties", {}) or {})
        for key in ("properties", "patternProperties", "$defs", "definitions"):
            if isinstance(out.get(key), dict):
                out[key] = {k: self.node(v) for k, v in out[key].items()}
        for key in ("items", "additionalProperties", "not", "if", "then", "else"):
            if isinstance(out.get(key), dict) or out.get(key) is True:
                repeated = key in ("items", "additionalProperties")
                # Repeated values share the budget; ~4 is what a model that stops at random reaches.
                self.weight *= 4 if repeated else 1
                out[key] = self.node(out[key])
                self.weight //= 4 if repeated else 1
        if "enum" in out or "const" in out or "$ref" in out:
            return out
        kinds = out.get("type")
        kinds = kinds if isinstance(kinds, list) else [kinds] if kinds else []
        if "string" in kinds:
            self._string(out)
        if "integer" in kinds or "number" in kinds:
            self._number(out)
        if "array" in kinds or "items" in out or "prefixItems" in out:
            self._array(out)
        if "object" in kinds or "properties" in out:
            self._object(out)
        return out

    def _string(self, out: dict[str, Any]) -> None:
        fmt = out.get("format")
        if isinstance(fmt, str):
            pattern = _format_pattern(fmt, min(self.cap, 32))
            out.pop("format")
            if pattern is not None and "pattern" not in out:
                out["pattern"] = bound_regex(pattern, min(self.cap, 32))
                self.fixed += self.weight * 40
                return
        if isinstance(out.get("pattern"), str):
            out["pattern"] = bound_regex(out["pattern"], min(self.cap, 32))
            self.fixed += self.weight * 32
            return
        if "maxLength" in out:
            self.fixed += self.weight * min(int(out["maxLength"]), self.cap)
        else:
            self.num_strings += self.weight  # capped by the watchdog, not the grammar

    def _number(self, out: dict[str, Any]) -> None:
        bound = 10**self.limits.max_integer_digits - 1
        low = out.get("minimum", out.get("exclusiveMinimum"))
        high = out.get("maximum", out.get("exclusiveMaximum"))
        if low is None:
            out["minimum"] = -bound if high is None else min(high, 0) - bound
        if high is None:
            out["maximum"] = bound if low is None else max(low, 0) + bound
        width = len(str(int(max(abs(out.get("minimum", 0)), abs(out.get("maximum", 0))))))
        self.fixed += self.weight * (width + (8 if "number" in str(out.get("type")) else 1))

    def _array(self, out: dict[str, Any]) -> None:
        low = out.get("minItems", 0)
        cap = max(1, low) if out.get("uniqueItems") else self.limits.max_array_items
        out["maxItems"] = max(min(out.get("maxItems", cap), cap), low)

    def _object(self, out: dict[str, Any]) -> None:
        extra = out.get("additionalProperties")
        if isinstance(extra, dict) or out.get("patternProperties"):
            low = out.get("minProperties", len(out.get("required", [])))
            cap = len(out.get("properties", {})) + self.limits.max_object_properties
            out["maxProperties"] = max(min(out.get("maxProperties", cap), cap), low)


def bound_schema(schema: Any, limits: GrammarLimits, max_tokens: int | None = None) -> tuple[Any, int]:
    """(a narrowed copy of `schema`, the character cap for its plain strings), sized so that an
    answer fits in about max_tokens (see the module docstring)."""
    schema = copy.deepcopy(schema)
    cap = limits.max_string_length
    if max_tokens is not None:
        # A token is at least one character; keep a quarter of the budget for punctuation and
        # whitespace. Numbers get narrower when they would take over half of the rest; strings
        # share what keys, numbers and formats leave.
        room = max_tokens * 3 // 4
        for digits in sorted({limits.max_integer_digits, min(6, limits.max_integer_digits), 3}, reverse=True):
            limits = dataclasses.replace(limits, max_integer_digits=digits)
            probe = _Bounder(limits, limits.max_string_length)
            probe.node(copy.deepcopy(schema))
            if probe.fixed <= room // 2:
                break
        cap = max(limits.min_string_length, min(cap, (room - probe.fixed) // max(1, probe.num_strings)))
    return _Bounder(limits, cap).node(schema), cap


def string_cap_for(limits: GrammarLimits, max_tokens: int | None, num_strings: int = 4) -> int:
    if max_tokens is None:
        return limits.max_string_length
    return max(limits.min_string_length, min(limits.max_string_length, (max_tokens // 2) // max(1, num_strings)))
