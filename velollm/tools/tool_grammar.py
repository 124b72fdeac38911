"""tool_choice -> StructuredOutput: the grammar that makes a family's tool calls well formed.

"required" -> one or more calls (one when parallel_tool_calls is false) and nothing else;
a named function -> exactly that call; "auto" -> free text, constrained from the family's
tool-call marker on; "none" -> no constraint. The output is xgrammar's structural-tag JSON, built
as plain dicts so this module needs no xgrammar.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from velollm.errors import InvalidRequest
from velollm.sampling_params import StructuredOutput
from velollm.tools.tool_parsers import ToolFamily
from velollm.tools.tool_schema import ToolSpec, normalize_schema, tool_specs

# (trigger, call begin before the name, between name and arguments, call end, separator of calls)
_FORMATS: dict[ToolFamily, tuple[str, str, str, str, str]] = {
    ToolFamily.HERMES: ("<tool_call>", '<tool_call>\n{"name": "', '", "arguments": ', "}\n</tool_call>", "\n"),
    ToolFamily.LLAMA3: ('{"name": ', '{"name": "', '", "parameters": ', "}", "; "),
    ToolFamily.MISTRAL: ("[TOOL_CALLS]", '{"name": "', '", "arguments": ', "}", ", "),
}


def _tag(spec: ToolSpec, family: ToolFamily, wrap_mistral: bool) -> dict[str, Any]:
    _, begin, middle, end, _ = _FORMATS[family]
    if family is ToolFamily.MISTRAL and wrap_mistral:
        begin, end = "[TOOL_CALLS][" + begin, end + "]"
    return {
        "type": "tag",
        "begin": f"{begin}{json.dumps(spec.name)[1:-1]}{middle}",  # the name as a JSON string's body
        "content": {"type": "json_schema", "json_schema": spec.parameters},
        "end": end,
    }


def named_tool(tool_choice: Any) -> str | None:
    """The function name of a named tool_choice ({"type": "function", "function": {"name": ...}})."""
    if isinstance(tool_choice, Mapping):
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else tool_choice.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(
                "tool_choice must name a function: {'type': 'function', 'function': {'name': ...}}", param="tool_choice"
            )
        return name
    return None


def tool_call_constraint(
    tools: Sequence[Mapping[str, Any]] | Sequence[ToolSpec] | None,
    tool_choice: Any = "auto",
    family: ToolFamily = ToolFamily.HERMES,
    parallel_tool_calls: bool = True,
    max_calls: int = 4,
) -> StructuredOutput | None:
    """The StructuredOutput for this tool_choice, or None when generation stays free.

    max_calls caps the calls of a "required" answer: a bounded answer ends within max_tokens.
    """
    specs = list(tools or [])
    specs = specs if all(isinstance(s, ToolSpec) for s in specs) else tool_specs(specs)  # type: ignore[arg-type]
    if tool_choice is None:
        tool_choice = "auto"
    name = named_tool(tool_choice)
    if name is None and tool_choice not in ("auto", "required", "none"):
        raise InvalidRequest(
            f"tool_choice must be 'none', 'auto', 'required' or a named function, got {tool_choice!r}",
            param="tool_choice",
        )
    if tool_choice == "none" or not specs:
        if tool_choice == "required" or name is not None:
            raise InvalidRequest("tool_choice requires tools, but none were given", param="tool_choice")
        return None
    trigger, _, _, _, separator = _FORMATS[family]
    if name is not None:
        chosen = [s for s in specs if s.name == name]  # type: ignore[union-attr]
        if not chosen:
            raise InvalidRequest(f"tool_choice names {name!r}, which is not in tools", param="tool_choice")
        fmt: dict[str, Any] = _tag(chosen[0], family, wrap_mistral=True)  # type: ignore[arg-type]
    elif tool_choice == "required":
        fmt = _required(specs, family, separator, parallel_tool_calls, max_calls)  # type: ignore[arg-type]
    else:
        wrap = family is ToolFamily.MISTRAL
        fmt = {
            "type": "triggered_tags",
            "triggers": [trigger],
            "tags": [_tag(s, family, wrap_mistral=wrap) for s in specs],  # type: ignore[arg-type]
            "stop_after_first": not parallel_tool_calls,
        }
    return StructuredOutput("structural_tag", json.dumps({"type": "structural_tag", "format": fmt}))


def calls_or_answer(
    specs: Sequence[ToolSpec], family: ToolFamily, parallel_tool_calls: bool, answer: StructuredOutput,
    max_calls: int = 4,
) -> StructuredOutput:
    """tool_choice "auto" beside a constraint on the answer (response_format, Ollama's `format`): the answer is
    either calls, as "required" makes them, or the text that constraint asks for. Free text until the call
    marker (plain "auto") would let a text answer ignore the format, as it did."""
    separator = _FORMATS[family][4]
    calls = _required(list(specs), family, separator, parallel_tool_calls, max_calls)
    return StructuredOutput("structural_tag", json.dumps(
        {"type": "structural_tag", "format": {"type": "or", "elements": [calls, _answer_format(answer)]}}))


def _answer_format(answer: StructuredOutput) -> dict[str, Any]:
    if answer.kind == "structural_tag":
        raise InvalidRequest(f"a {answer.kind} constraint cannot go beside tools", param="tools")
    from velollm.engine.text.structured_output import structural_format

    return structural_format(answer)


def _required(
    specs: list[ToolSpec], family: ToolFamily, separator: str, parallel: bool, max_calls: int
) -> dict[str, Any]:
    one: dict[str, Any] = {"type": "or", "elements": [_tag(s, family, wrap_mistral=False) for s in specs]}
    calls = one
    if parallel and max_calls > 1:
        more = {"type": "sequence", "elements": [{"type": "const_string", "value": separator}, one]}
        calls = {
            "type": "sequence",
            "elements": [one, {"type": "repeat", "min": 0, "max": max_calls - 1, "content": more}],
        }
    if family is ToolFamily.MISTRAL:
        return {
            "type": "sequence",
            "elements": [
                {"type": "const_string", "value": "[TOOL_CALLS]["},
                calls,
                {"type": "const_string", "value": "]"},
            ],
        }
    return calls


def response_format_constraint(response_format: Mapping[str, Any] | None) -> StructuredOutput | None:
    """OpenAI response_format -> StructuredOutput (json_object / json_schema; text -> None)."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return StructuredOutput("json_object")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if not isinstance(schema, Mapping):
            raise InvalidRequest(
                "response_format.json_schema.schema must be a JSON Schema object", param="response_format"
            )
        # strict=true is honoured by constraining to the schema as given, even where it does not
        # follow OpenAI's strict-mode rules (no extra validation of the schema's shape).
        return StructuredOutput("json_schema", json.dumps(normalize_schema(dict(schema))))
    raise InvalidRequest(f"unsupported response_format type {kind!r}", param="response_format")


def ollama_format_constraint(fmt: Any) -> StructuredOutput | None:
    """Ollama `format`: "json" or a JSON Schema object."""
    if fmt in (None, ""):
        return None
    if fmt == "json":
        return StructuredOutput("json_object")
    if isinstance(fmt, Mapping):
        return StructuredOutput("json_schema", json.dumps(normalize_schema(dict(fmt))))
    raise InvalidRequest(f'format must be "json" or a JSON Schema object, got {fmt!r}', param="format")
