"""ToolSpec: one callable tool, normalized from the shapes clients send.

Accepts OpenAI (`{"type": "function", "function": {...}}`), bare (`{"name", "parameters"}`) and
Ollama tools; maps Gorilla/BFCL pseudo-types (`dict`, `float`, `tuple`, `any`) to JSON Schema so
that both `jsonschema` and the grammar compiler accept the schema as the client meant it.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from velollm.errors import InvalidRequest

_GORILLA_TYPES = {
    "dict": "object",
    "float": "number",
    "double": "number",
    "int": "integer",
    "long": "integer",
    "bool": "boolean",
    "str": "string",
    "list": "array",
    "tuple": "array",
    "String": "string",
    "Boolean": "boolean",
}
_EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters_json: str  # normalized JSON Schema of the arguments, serialized (frozen and hashable)
    strict: bool = False

    @cached_property
    def parameters(self) -> dict[str, Any]:
        """The schema, parsed once and shared: read it, do not change it (`to_openai` gives a copy)."""
        return json.loads(self.parameters_json)

    def to_openai(self) -> dict[str, Any]:
        # A fresh copy: the caller (a chat template, a client) owns what it gets.
        function = {"name": self.name, "description": self.description, "parameters": json.loads(self.parameters_json)}
        return {"type": "function", "function": function}


def template_tools(tools: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The tools as a chat template gets them: exactly as the client sent them (key order, texts and
    schemas untouched, as transformers' apply_chat_template passes them), a bare function object
    wrapped the way templates expect ({"type": "function", "function": ...})."""
    return [tool if "function" in tool else {"type": "function", "function": tool} for tool in tools]


def normalize_schema(schema: Any) -> Any:
    """A copy of `schema` with pseudo-types mapped to JSON Schema types ('any' drops the type)."""
    schema = copy.deepcopy(schema)
    _fix_types(schema)
    return schema


def _fix_types(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _fix_types(item)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind == "any":
        del node["type"]
    elif isinstance(kind, str):
        node["type"] = _GORILLA_TYPES.get(kind, kind)
    elif isinstance(kind, list):
        node["type"] = [_GORILLA_TYPES.get(k, k) for k in kind if k != "any"] or node.pop("type")
    for key, value in node.items():
        if key in ("properties", "patternProperties", "$defs", "definitions") and isinstance(value, dict):
            for sub in value.values():
                _fix_types(sub)
        elif key not in ("enum", "const", "default", "examples", "required", "type"):
            _fix_types(value)


def tool_specs(tools: Sequence[Mapping[str, Any]] | None) -> list[ToolSpec]:
    """Normalize request tools; raises InvalidRequest on shapes no client means."""
    specs, seen = [], set()
    for i, tool in enumerate(tools or []):
        if not isinstance(tool, Mapping):
            raise InvalidRequest(f"tools[{i}] must be an object", param="tools")
        fn = tool.get("function", tool) if tool.get("type", "function") == "function" else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise InvalidRequest(f"tools[{i}] must be a function tool with a name", param="tools")
        params = fn.get("parameters")
        if params is None:
            params = _EMPTY_PARAMETERS
        if not isinstance(params, Mapping):
            raise InvalidRequest(f"tools[{i}].function.parameters must be a JSON Schema object", param="tools")
        params = normalize_schema(dict(params))
        if "type" not in params and "properties" in params:
            params["type"] = "object"
        parameters_json = json.dumps(params, sort_keys=True)
        _check_schema(params, parameters_json, i)
        if fn["name"] in seen:
            raise InvalidRequest(f"tool name {fn['name']!r} is defined twice", param="tools")
        seen.add(fn["name"])
        specs.append(
            ToolSpec(
                name=fn["name"],
                description=str(fn.get("description") or ""),
                parameters_json=parameters_json,
                strict=bool(fn.get("strict", False)),
            )
        )
    return specs


# Schemas already checked against their metaschema, by their JSON: a client sends the same tools every turn,
# and one request checks them more than once (parse, session, prompt). The check takes ~5-65 ms a tool
# (Draft 2020-12's $dynamicRef); 300 tools took seconds on the event loop, each time. Small schemas only,
# so that what is kept stays small (CHECKED_MAX of at most CHECKED_CHARS each).
CHECKED_MAX = 1024
CHECKED_CHARS = 16 << 10


@functools.lru_cache(maxsize=CHECKED_MAX)
def _checked(schema_json: str) -> None:
    _metaschema_check(json.loads(schema_json))


def _metaschema_check(schema: dict[str, Any]) -> None:
    import jsonschema  # lazily: not needed by `from velollm import LLM`

    jsonschema.validators.validator_for(schema).check_schema(schema)


def _check_schema(schema: dict[str, Any], schema_json: str, index: int) -> None:
    import jsonschema

    try:
        if len(schema_json) <= CHECKED_CHARS:
            _checked(schema_json)
        else:
            _metaschema_check(schema)
    except jsonschema.SchemaError as e:
        raise InvalidRequest(
            f"tools[{index}].function.parameters is not a valid JSON Schema: {e.message}", param="tools"
        ) from e
