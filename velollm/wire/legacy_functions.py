"""OpenAI's deprecated function calling, run as the tools it became.

Clients written before tools (older LangChain agents and AutoGen, scripts on the 2023 API) send `functions`
and `function_call`, put a model's call in an assistant message's `function_call` and its result in a
`function` message. On the way in, `as_tools` rewrites all of it as tools (`tools`, `tool_choice`, one call
per answer, assistant `tool_calls` and `tool` messages); on the way out, the chat formatter writes the call
back as `message.function_call` / `delta.function_call` with finish_reason "function_call", as OpenAI does
for these requests. A body mixing both forms (`functions` with `tools`, `function_call` with `tool_choice`)
is a 400: which one the client meant is not ours to guess.

Upstreams (Ollama, llama.cpp's server) know tools only and ignore these fields: the proxy sends them the
request as tools too, and rewrites their answer (`function_call_answer`, `function_call_chunk`: tool calls in,
function_call out, whole or streamed) as the chat formatter writes a native one.
"""

from __future__ import annotations

from typing import Any

from velollm.errors import InvalidRequest

CALL_ID_PREFIX = "call_fn_"  # ids of the calls an assistant message's function_call becomes


def as_tools(body: Any) -> tuple[Any, bool]:
    """`body` with the legacy function-calling fields rewritten as tools (a new dict; `body` is left as
    sent), and whether the request declared `functions` (then the answer speaks function_call)."""
    if not isinstance(body, dict):
        return body, False
    legacy = body.get("functions") is not None
    if not legacy and body.get("function_call") is None and not _has_legacy_messages(body.get("messages")):
        return body, False
    out = {k: v for k, v in body.items() if k not in ("functions", "function_call")}
    if legacy:
        if body.get("tools") is not None:
            raise InvalidRequest("functions and tools cannot both be set: send tools only", param="functions")
        out["tools"] = _tools(body["functions"])
        out["parallel_tool_calls"] = False  # a function_call answer holds one call
    if body.get("function_call") is not None:
        if body.get("tool_choice") is not None:
            raise InvalidRequest("function_call and tool_choice cannot both be set: send tool_choice only",
                                 param="function_call")
        out["tool_choice"] = _tool_choice(body["function_call"], legacy)
    if isinstance(body.get("messages"), list):
        out["messages"] = _messages(body["messages"])
    return out, legacy


def _tools(functions: Any) -> list[dict[str, Any]]:
    if not isinstance(functions, list):
        raise InvalidRequest("functions must be an array of function objects", param="functions")
    for i, fn in enumerate(functions):
        if not isinstance(fn, dict):
            raise InvalidRequest(f"functions[{i}] must be an object with a name", param=f"functions[{i}]")
    return [{"type": "function", "function": fn} for fn in functions]


def _tool_choice(choice: Any, have_functions: bool) -> str | dict[str, Any]:
    if choice in ("none", "auto"):
        return choice
    name = choice.get("name") if isinstance(choice, dict) else None
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"function_call must be 'none', 'auto' or {{'name': ...}}, got {choice!r}",
                             param="function_call")
    if not have_functions:
        raise InvalidRequest(f"function_call names {name!r}, but no functions were given", param="function_call")
    return {"type": "function", "function": {"name": name}}


def _has_legacy_messages(messages: Any) -> bool:
    return isinstance(messages, list) and any(
        isinstance(m, dict) and (m.get("role") == "function" or m.get("function_call") is not None) for m in messages)


def _messages(messages: list[Any]) -> list[Any]:
    """An assistant's function_call becomes a tool call with an id; a function message becomes the tool
    message answering the latest call (by id), its name kept."""
    out: list[Any] = []
    last_id = None
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            out.append(m)  # normalize_messages names what is wrong with it
            continue
        if m.get("role") == "assistant" and m.get("function_call") is not None:
            if m.get("tool_calls") is not None:
                raise InvalidRequest(f"messages[{i}] has both function_call and tool_calls",
                                     param=f"messages[{i}].function_call")
            call = m["function_call"]
            if not isinstance(call, dict):
                raise InvalidRequest(f"messages[{i}].function_call must be an object with name and arguments",
                                     param=f"messages[{i}].function_call")
            last_id = f"{CALL_ID_PREFIX}{i}"
            m = {k: v for k, v in m.items() if k != "function_call"}
            m["tool_calls"] = [{"id": last_id, "type": "function", "function": call}]
        elif m.get("role") == "function":
            m = {**m, "role": "tool", "tool_call_id": last_id or f"{CALL_ID_PREFIX}{i}"}
        out.append(m)
    return out


def function_call_delta(tool_calls: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A stream's tool-call deltas as the legacy `delta.function_call` (the first call's name and
    argument pieces; there is one, parallel_tool_calls being off)."""
    pieces = [c.get("function") or {} for c in tool_calls if c.get("index", 0) == 0]
    if not pieces:
        return None
    out: dict[str, Any] = {}
    for piece in pieces:
        if "name" in piece:
            out["name"] = piece["name"]
        if "arguments" in piece:
            out["arguments"] = out.get("arguments", "") + piece["arguments"]
    return out


def finish_reason(reason: str | None) -> str | None:
    return "function_call" if reason == "tool_calls" else reason


def function_call_answer(answer: Any) -> Any:
    """A whole chat.completion whose first tool call (the one call of a `functions` request) is written as
    `message.function_call`, finish_reason "tool_calls" as "function_call"; anything else as it is."""
    for choice in _choices(answer):
        message = choice.get("message")
        if isinstance(message, dict) and "tool_calls" in message:
            calls = message.pop("tool_calls") or []
            first = calls[0].get("function") if calls and isinstance(calls[0], dict) else None
            if isinstance(first, dict):
                message["function_call"] = {"name": first.get("name"), "arguments": first.get("arguments", "")}
        choice["finish_reason"] = finish_reason(choice.get("finish_reason"))
    return answer


def function_call_chunk(chunk: Any) -> Any:
    """A chat.completion.chunk whose tool-call deltas are written as `delta.function_call`. The call is the
    tool calls' (the upstream was asked with tools): an upstream's own copy of it as `function_call`
    (llama-cpp-python sends both) goes."""
    for choice in _choices(chunk):
        delta = choice.get("delta")
        if isinstance(delta, dict):
            delta.pop("function_call", None)
        if isinstance(delta, dict) and "tool_calls" in delta:
            calls = delta.pop("tool_calls")
            function_call = function_call_delta([c for c in calls or [] if isinstance(c, dict)])
            if function_call is not None:
                delta["function_call"] = function_call
        if "finish_reason" in choice:
            choice["finish_reason"] = finish_reason(choice["finish_reason"])
    return chunk


def _choices(obj: Any) -> list[dict[str, Any]]:
    choices = obj.get("choices") if isinstance(obj, dict) else None
    return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []
