"""Ollama's template Values as Go types: template/template.go's templateMessage, templateTool, ... built
from chat messages and tools as VeloLLM receives them (OpenAI or Ollama shape)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from velollm.engine.text.go_template.values import GoStruct, Named, go_json, nil_slice, unwrap


def message_content(message: Mapping[str, Any]) -> str:
    """A templateMessage's Content: what collate joins and the legacy path reads, without building the rest."""
    return _content(message.get("content"))


def _content(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # OpenAI content parts: the text parts, in order
        return "".join(p.get("text", "") for p in value if isinstance(p, Mapping) and p.get("type") == "text")
    return str(value)


def go_number(v: Any) -> Any:
    """JSON decoded as Go's encoding/json into `any` decodes it: every number is a float64."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, Mapping):
        return {str(k): go_number(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [go_number(x) for x in v]
    return v


def _json_string_map(v: Any) -> str:
    return "{}" if v is None else go_json(v)


def _args(value: Any) -> Named:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            value = {}
    value = go_number(value) if isinstance(value, Mapping) else None
    return Named("template.templateArgs", value or None, _json_string_map)


def _tool_call(call: Mapping[str, Any], position: int) -> GoStruct:
    fn = call.get("function") or {}
    index = fn.get("index", call.get("index", 0))
    return GoStruct("template.templateToolCall", {
        "ID": str(call.get("id") or ""),
        "Function": GoStruct("template.templateToolCallFunction", {
            "Index": int(index) if isinstance(index, (int, float)) else 0,
            "Name": str(fn.get("name") or ""), "Arguments": _args(fn.get("arguments"))}),
    })


def template_message(message: Mapping[str, Any]) -> GoStruct:
    calls = message.get("tool_calls") or []
    thinking = message.get("thinking") or message.get("reasoning_content") or message.get("reasoning") or ""
    return GoStruct("*template.templateMessage", {
        "Role": str(message.get("role") or ""), "Content": message_content(message),
        "Thinking": str(thinking), "Images": nil_slice("[]api.ImageData"),
        "ToolCalls": [_tool_call(c, i) for i, c in enumerate(calls)] or nil_slice("[]template.templateToolCall"),
        "ToolName": str(message.get("tool_name") or (message.get("name") if message.get("role") == "tool" else "")
                        or ""),
        "ToolCallID": str(message.get("tool_call_id") or ""),
    })


def _property_type(value: Any) -> Named:
    types = [value] if isinstance(value, str) else [str(t) for t in value] if isinstance(value, list) else []
    return Named("api.PropertyType", types or None, _type_string, _type_json)


def _type_string(types: list[str] | None) -> str:
    if not types:
        return ""
    return types[0] if len(types) == 1 else "[" + " ".join(types) + "]"


def _type_json(types: list[str] | None) -> str:
    if types and len(types) == 1:
        return go_json(types[0])
    return go_json(types)


_PROPERTY_JSON = [("anyOf", "AnyOf", True), ("type", "Type", True), ("items", "Items", True),
                  ("description", "Description", True), ("enum", "Enum", True), ("properties", "Properties", True),
                  ("required", "Required", True)]


def tool_property(schema: Any) -> GoStruct:
    schema = schema if isinstance(schema, Mapping) else {}
    nested = schema.get("properties")
    return GoStruct("api.ToolProperty", {
        "AnyOf": [tool_property(s) for s in schema.get("anyOf") or []] or nil_slice("[]api.ToolProperty"),
        "Type": _property_type(schema.get("type")),
        "Items": go_number(schema.get("items")),
        "Description": str(schema.get("description") or ""),
        "Enum": go_number(list(schema["enum"])) if schema.get("enum") else nil_slice("[]interface {}"),
        "Properties": _properties(nested if isinstance(nested, Mapping) else None),
        "Required": [str(r) for r in schema.get("required") or []] or nil_slice("[]string"),
    }, _PROPERTY_JSON)


def _properties(props: Mapping[str, Any] | None) -> Named:
    value = {str(k): tool_property(v) for k, v in props.items()} if props is not None else None
    return Named("template.templateProperties", value, _json_string_map)


def template_tool(tool: Mapping[str, Any]) -> GoStruct:
    fn = tool.get("function") or {}
    params = fn.get("parameters") or {}
    props = params.get("properties")
    return GoStruct("template.templateTool", {
        "Type": str(tool.get("type") or ""), "Items": go_number(tool.get("items")),
        "Function": GoStruct("template.templateToolFunction", {
            "Name": str(fn.get("name") or ""), "Description": str(fn.get("description") or ""),
            "Parameters": GoStruct("template.templateToolFunctionParameters", {
                "Type": str(params.get("type") or ""), "Defs": go_number(params.get("$defs")),
                "Items": go_number(params.get("items")),
                "Required": [str(r) for r in params.get("required") or []] or nil_slice("[]string"),
                "Properties": _properties(props if isinstance(props, Mapping) else None),
            }, [("type", "Type", False), ("$defs", "Defs", True), ("items", "Items", True),
                ("required", "Required", True), ("properties", "Properties", False)]),
        }, [("name", "Name", False), ("description", "Description", False), ("parameters", "Parameters", False)]),
    }, [("type", "Type", False), ("items", "Items", True), ("function", "Function", False)])


def template_tools(tools: Sequence[Mapping[str, Any]] | None) -> Named:
    value = [template_tool(t) for t in tools] if tools is not None else None
    return Named("template.templateTools", value, lambda v: go_json(v))


def to_typescript_type(v: Any) -> str:
    """Ollama's toTypeScriptType func: an api.ToolProperty's TypeScript type, else "any"."""
    if not isinstance(v, GoStruct) or v.type_name != "api.ToolProperty":
        return "any"
    any_of = unwrap(v.fields["AnyOf"])
    if any_of:
        return " | ".join(to_typescript_type(p) for p in any_of)
    types = v.fields["Type"].value or []
    if not types:
        return "any"
    names = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean", "array": "any[]",
             "object": "Record<string, any>", "null": "null"}
    return " | ".join(names.get(t, "any") for t in types)


