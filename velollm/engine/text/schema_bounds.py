"""bound_schema: a JSON Schema narrowed so that every value it admits is short.

Under a grammar, a model that does not want to stop (a random one, or a confused one) runs on
until max_tokens and the answer is cut mid-JSON. Here the grammar gets caps on number widths,
array items and map entries, and bounded patterns for formats and patterns (xgrammar expands
`format: email` or `[a-z]+` without bound and ignores maxLength next to them). Plain strings stay
uncapped in the grammar: JsonGuard caps them while decoding, and winds the answer down near
max_tokens. The result only narrows the schema: whatever it admits, the original admits too, so
validation uses the original.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GrammarLimits:
    max_string_length: int = 4096  # characters a plain string may hold before it must close
    max_array_items: int = 64  # for arrays without maxItems
    max_object_properties: int = 32  # for maps (additionalProperties / patternProperties)
    max_integer_digits: int = 12
    max_pattern_repeat: int = 64  # for `*`, `+` and `{m,}` in patterns and formats
    any_value_depth: int = 2  # nesting of untyped values ({} / json_object members)
    # whitespace characters between JSON tokens; None: unlimited. At least 1: a structural tag (tool calls)
    # cannot say "no whitespace" (xgrammar's max_whitespace_cnt must be positive, and it has no any_whitespace)
    max_whitespace: int | None = 2
    wind_down_reserve: int = 256  # tokens kept at the end of max_tokens (at most 3/4) to close

    def __post_init__(self) -> None:
        if self.max_string_length < 1 or self.max_array_items < 1 or self.max_object_properties < 1:
            raise ValueError("string, item and property limits must be at least 1")
        if self.max_integer_digits < 1 or self.max_pattern_repeat < 1 or self.wind_down_reserve < 1:
            raise ValueError("digit, pattern and wind-down limits must be at least 1")
        if self.max_whitespace is not None and self.max_whitespace < 1:
            raise ValueError("max_whitespace must be at least 1 (None: unlimited): tool-call grammars cannot "
                             "forbid whitespace")

    def wind_down_at(self, max_tokens: int | None) -> int | None:
        """Token count after which a constrained answer is steered to its end."""
        if max_tokens is None:
            return None
        return max_tokens - min(max_tokens * 3 // 4, self.wind_down_reserve)

    def reasoning_budget(self, max_tokens: int | None) -> int | None:
        """Tokens a reasoning model may think before a constrained answer: the answer keeps as much
        room before its own wind-down as the wind-down keeps after it."""
        return self.wind_down_at(self.wind_down_at(max_tokens))


_D, _H = r"[0-9]", r"[0-9a-f]"
_DATE = r"[12][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"  # day <= 28: valid in every month
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
_LABEL = r"[a-z0-9]([a-z0-9-]{{0,{}}}[a-z0-9])?"


def _format_pattern(fmt: str, n: int) -> str | None:
    label = _LABEL.format(max(1, min(n, 61)))
    host = rf"{label}(\.{label}){{0,2}}"
    patterns = {
        "date": _DATE,
        "time": _TIME,
        "date-time": rf"{_DATE}T{_TIME}",
        "email": rf"[a-z0-9][a-z0-9._+-]{{0,{n}}}@{label}\.[a-z]{{2,6}}",
        "idn-email": rf"[a-z0-9][a-z0-9._+-]{{0,{n}}}@{label}\.[a-z]{{2,6}}",
        "hostname": host,
        "idn-hostname": host,
        "uri": rf"https?://{host}(/[A-Za-z0-9._~-]{{1,{n}}}){{0,3}}",
        "iri": rf"https?://{host}(/[A-Za-z0-9._~-]{{1,{n}}}){{0,3}}",
        "uri-reference": rf"(https?://{host})?(/[A-Za-z0-9._~-]{{1,{n}}}){{1,3}}",
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
            out.append(f"{{{0 if ch == '*' else 1},{n}}}")
        elif ch == "?" and out and out[-1] == ")":
            out.append("{0,1}")  # xgrammar 0.2.x mis-reads an optional group that holds {m,n}
        elif ch == "{" and (m := re.match(r"\{(\d+),\}", pattern[i:])):
            low = int(m.group(1))
            out.append(f"{{{low},{max(low, n)}}}")
            i += m.end()
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def any_value_schema(depth: int, limits: GrammarLimits) -> dict[str, Any]:
    """A bounded stand-in for "any JSON value" (untyped schemas, json_object members)."""
    bound = 10**limits.max_integer_digits - 1
    scalars: list[dict[str, Any]] = [
        {"type": "string"},
        {"type": "number", "minimum": -bound, "maximum": bound},
        {"type": "boolean"},
        {"type": "null"},
    ]
    if depth > 0:
        inner = any_value_schema(depth - 1, limits)
        scalars.append({"type": "array", "items": inner, "maxItems": limits.max_array_items})
        scalars.append({"type": "object", "additionalProperties": inner, "maxProperties": limits.max_object_properties})
    return {"anyOf": scalars}


class _Bounder:
    def __init__(self, limits: GrammarLimits) -> None:
        self.limits = limits

    def node(self, schema: Any) -> Any:
        if schema is True or schema == {}:
            return any_value_schema(self.limits.any_value_depth, self.limits)
        if not isinstance(schema, dict):
            return schema
        out = dict(schema)
        for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            if isinstance(out.get(key), list):
                out[key] = [self.node(s) for s in out[key]]
        for key in ("properties", "patternProperties", "$defs", "definitions"):
            if isinstance(out.get(key), dict):
                out[key] = {k: self.node(v) for k, v in out[key].items()}
        for key in ("items", "additionalProperties", "not", "if", "then", "else"):
            if isinstance(out.get(key), dict) or out.get(key) is True:
                out[key] = self.node(out[key])
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
        # Plain strings stay uncapped here: JsonGuard caps them while decoding.
        n = self.limits.max_pattern_repeat
        fmt = out.get("format")
        if isinstance(fmt, str):
            pattern = _format_pattern(fmt, min(n, 32))  # formats are short by nature
            out.pop("format")
            if pattern is not None and "pattern" not in out:
                out["pattern"] = bound_regex(pattern, n)
                return
        if isinstance(out.get("pattern"), str):
            out["pattern"] = bound_regex(out["pattern"], n)

    def _number(self, out: dict[str, Any]) -> None:
        bound = 10**self.limits.max_integer_digits - 1
        low = out.get("minimum", out.get("exclusiveMinimum"))
        high = out.get("maximum", out.get("exclusiveMaximum"))
        if low is None:
            out["minimum"] = -bound if high is None else min(high, 0) - bound
        if high is None:
            out["maximum"] = bound if low is None else max(low, 0) + bound

    def _array(self, out: dict[str, Any]) -> None:
        low = out.get("minItems", 0)
        cap = max(1, low) if out.get("uniqueItems") else self.limits.max_array_items
        out["maxItems"] = max(min(out.get("maxItems", cap), cap), low)

    def _object(self, out: dict[str, Any]) -> None:
        extra = out.get("additionalProperties")
        if isinstance(extra, dict) or out.get("patternProperties"):
            low = out.get("minProperties", len(out.get("required", [])))
            cap = self.limits.max_object_properties
            out["maxProperties"] = max(min(out.get("maxProperties", cap), cap), low)


def bound_schema(schema: Any, limits: GrammarLimits) -> Any:
    """A narrowed copy of `schema` (see the module docstring)."""
    return _Bounder(limits).node(copy.deepcopy(schema))


JSON_OBJECT_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": True}


def bound_tag_schemas(node: Any, limits: GrammarLimits) -> None:
    """Every JSON schema inside a structural tag narrowed (bound_schema), in place; a tag's own whitespace
    bound set from `limits` where it has none."""
    if isinstance(node, list):
        for item in node:
            bound_tag_schemas(item, limits)
    elif isinstance(node, dict):
        if node.get("type") == "json_schema" and "json_schema" in node:
            node["json_schema"] = bound_schema(node["json_schema"], limits)
            if limits.max_whitespace is not None:
                node.setdefault("max_whitespace_cnt", limits.max_whitespace)
            return
        for value in node.values():
            bound_tag_schemas(value, limits)
