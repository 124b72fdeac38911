"""ResponsesRequest: a `POST /v1/responses` body, validated (OpenAI's field names in every 400)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from velollm.errors import InvalidRequest
from velollm.request_fields import Fields
from velollm.wire.metadata import check_metadata, check_user

# Accepted and echoed or ignored as OpenAI allows; anything else unknown is left alone, as the
# SDK's extra_body may carry vLLM-style sampling extras.
_UNSUPPORTED = {
    "conversation": "conversations are not supported; use previous_response_id",
    "prompt": "stored prompts are not supported",
}


# The `include` value that asks for the output text's logprobs (`top_logprobs` alternatives each).
LOGPROBS = "message.output_text.logprobs"
# The `include` value that asks for reasoning items a stateless client can send back (store=false).
ENCRYPTED_REASONING = "reasoning.encrypted_content"
# OpenAI's `include` values (the openai SDK's ResponseIncludable); any other is its 400, so a misspelt one is not
# an answer without what was asked. Those of built-in tools ask for nothing here: there are none.
INCLUDABLE = (LOGPROBS, ENCRYPTED_REASONING, "file_search_call.results", "web_search_call.results",
              "web_search_call.action.sources", "message.input_image.image_url",
              "computer_call_output.output.image_url", "code_interpreter_call.outputs")


@dataclass(frozen=True)
class ResponsesRequest:
    model: str
    input: list[dict[str, Any]]  # items; a text input is one user message item
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)  # Responses function tools (flat)
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    text_format: dict[str, Any] = field(default_factory=lambda: {"type": "text"})
    reasoning_effort: str | None = None
    stream: bool = False
    store: bool = True
    background: bool = False  # run by the server on its own (api/responses_background.py), polled or resumed
    previous_response_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    truncation: str = "disabled"
    top_logprobs: int | None = None
    logprobs: bool = False  # include has "message.output_text.logprobs"
    encrypted_reasoning: bool = False  # include has "reasoning.encrypted_content"
    extra: dict[str, Any] = field(default_factory=dict)  # sampling extras passed on to chat (seed, stop...)


def _bad(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid '{param}': {why}", param=param)


def _typed(body: Mapping[str, Any], name: str, types: type | tuple[type, ...], what: str) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, types) or (isinstance(value, bool) and types is not bool):  # JSON true is no number
        raise _bad(name, f"expected {what}, got {type(value).__name__}")
    return value


def _input(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    value = body.get("input")
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise _bad(f"input[{i}]", "expected an object")
        return [dict(item) for item in value]
    if value is None and body.get("previous_response_id"):
        return []
    raise _bad("input", "expected a string or an array of input items")


def _tools(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    tools = _typed(body, "tools", list, "an array") or []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _bad(f"tools[{i}]", "expected an object")
        if tool.get("type") != "function":
            raise _bad(f"tools[{i}].type", f"only 'function' tools are supported here, got {tool.get('type')!r}")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _bad(f"tools[{i}].name", "a function tool needs a name")
        if tool.get("parameters") is not None and not isinstance(tool["parameters"], dict):
            raise _bad(f"tools[{i}].parameters", "expected a JSON Schema object")
    return [dict(t) for t in tools]


def _tool_choice(body: Mapping[str, Any], names: list[str]) -> str | dict[str, Any]:
    choice = body.get("tool_choice")
    if choice is None:  # null is absent, as for every other field here and on chat completions
        choice = "auto"
    if choice in ("auto", "none", "required"):
        if choice == "required" and not names:
            raise _bad("tool_choice", "'required' needs tools, but none were given")
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        if choice.get("name") not in names:
            raise _bad("tool_choice", f"names {choice.get('name')!r}, which is not in tools")
        return {"type": "function", "name": choice["name"]}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        return _allowed_tools(choice, names)
    raise _bad("tool_choice", "expected 'auto', 'none', 'required', {'type': 'function', 'name': ...} "
                              "or {'type': 'allowed_tools', 'mode': ..., 'tools': [...]}")


def _allowed_tools(choice: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    if choice.get("mode") not in ("auto", "required"):
        raise _bad("tool_choice.mode", f"expected 'auto' or 'required', got {choice.get('mode')!r}")
    tools = choice.get("tools")
    if not isinstance(tools, list):
        raise _bad("tool_choice.tools", "expected an array of tools")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function" or tool.get("name") not in names:
            raise _bad(f"tool_choice.tools[{i}]", "expected {'type': 'function', 'name': ...} naming one of tools")
    return {"type": "allowed_tools", "mode": choice["mode"],
            "tools": [{"type": "function", "name": t["name"]} for t in tools]}


def _text_format(body: Mapping[str, Any]) -> dict[str, Any]:
    text = _typed(body, "text", dict, "an object") or {}
    fmt = text.get("format") or {"type": "text"}
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise _bad("text.format", "expected a format of type 'text', 'json_object' or 'json_schema'")
    if fmt["type"] == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise _bad("text.format.schema", "a json_schema format needs a schema object")
        if not isinstance(fmt.get("name"), str) or not fmt["name"]:
            raise _bad("text.format.name", "a json_schema format needs a name")
    return dict(fmt)


def _include(body: Mapping[str, Any]) -> list[str]:
    include = _typed(body, "include", list, "an array") or []
    for i, value in enumerate(include):
        if not isinstance(value, str):
            raise _bad(f"include[{i}]", f"expected a string, got {type(value).__name__}")
        if value not in INCLUDABLE:
            raise _bad(f"include[{i}]", f"unknown value {value!r:.100}; supported values are "
                                        + ", ".join(repr(v) for v in INCLUDABLE))
    return include


def _int(body: Mapping[str, Any], name: str, lo: int, hi: int | None = None) -> int | None:
    value = _typed(body, name, int, "an integer")
    if value is not None and (value < lo or (hi is not None and value > hi)):
        raise _bad(name, f"must be at least {lo}" + (f" and at most {hi}" if hi is not None else "") + f", got {value}")
    return value


def _number(body: Mapping[str, Any], name: str) -> float | None:
    """Its type in the Responses API's words; its range (finite, one a float holds: 10**400 was a 500) as every
    number field's (Fields)."""
    _typed(body, name, (int, float), "a number")
    return Fields(body).float(name, None)


def parse_responses_request(body: Any) -> ResponsesRequest:
    """Validate a create-response body; InvalidRequest (400) names the offending field."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object", param=None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "a model name is required")
    for name, why in _UNSUPPORTED.items():
        if body.get(name):
            raise _bad(name, why)
    tools = _tools(body)
    reasoning = _typed(body, "reasoning", dict, "an object") or {}
    metadata = check_metadata(body.get("metadata"))
    truncation = body.get("truncation") or "disabled"
    if truncation not in ("auto", "disabled"):
        raise _bad("truncation", "expected 'auto' or 'disabled'")
    background = bool(_typed(body, "background", bool, "a boolean"))
    if background and body.get("store") is False:  # what it makes is only ever read back from the store
        raise _bad("background", "background mode requires store to be true; set store to true or leave it out")
    known = set(ResponsesRequest.__dataclass_fields__) | {"text", "reasoning", "include", "service_tier",
                                                          "safety_identifier", "prompt_cache_key", *_UNSUPPORTED}
    return ResponsesRequest(
        model=model,
        input=_input(body),
        instructions=_typed(body, "instructions", str, "a string"),
        # Read as chat reads max_tokens (any integral JSON number, 1e30 too); the chat request underneath clamps
        # it to what the context leaves (velollm/output_budget.py), so a huge one means "as long as fits".
        max_output_tokens=Fields(body).int("max_output_tokens", None, lo=1),
        temperature=_number(body, "temperature"),
        top_p=_number(body, "top_p"),
        tools=tools,
        tool_choice=_tool_choice(body, [t["name"] for t in tools]),
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        text_format=_text_format(body),
        reasoning_effort=reasoning.get("effort"),
        stream=bool(_typed(body, "stream", bool, "a boolean")),
        store=body.get("store") is not False,
        background=background,
        previous_response_id=_typed(body, "previous_response_id", str, "a string"),
        metadata=metadata,
        user=check_user(body.get("user")),
        truncation=truncation,
        top_logprobs=_int(body, "top_logprobs", 0, 20),
        logprobs=LOGPROBS in _include(body),
        encrypted_reasoning=ENCRYPTED_REASONING in _include(body),
        extra={k: v for k, v in body.items() if k not in known},
    )
