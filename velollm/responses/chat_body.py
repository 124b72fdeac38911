"""A Responses request as a chat-completions body: what the native chat pipeline and chat upstreams take."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from velollm.errors import InvalidRequest
from velollm.responses.items import items_to_messages
from velollm.responses.request import ResponsesRequest


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
    fn.setdefault("parameters", {"type": "object", "properties": {}})
    return {"type": "function", "function": fn}


def _tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if not isinstance(choice, dict):
        return choice
    if choice["type"] == "allowed_tools":
        tools = [{"type": "function", "function": {"name": t["name"]}} for t in choice["tools"]]
        return {"type": "allowed_tools", "allowed_tools": {"mode": choice["mode"], "tools": tools}}
    return {"type": "function", "function": {"name": choice["name"]}}


def _response_format(fmt: dict[str, Any]) -> dict[str, Any] | None:
    if fmt["type"] == "text":
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None}
    return {"type": "json_schema", "json_schema": spec}


def conversation(req: ResponsesRequest, history: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """The chat messages of this turn without the instructions: the previous responses' conversation
    (`history`), then this request's input. This is what a stored response keeps."""
    messages = [*history, *items_to_messages(req.input)]
    _check_call_outputs(messages)
    return messages


def _check_call_outputs(messages: Sequence[dict[str, Any]]) -> None:
    """Each tool result answers a call made before it (in the input or the previous responses), or it is OpenAI's
    400: a result for no call reached the template as a tool message with nothing to answer, which a chat template
    renders as it likes (or fails on) and the model reads as a result out of nowhere."""
    call_ids: set[str] = set()
    for message in messages:
        call_ids.update(call["id"] for call in message.get("tool_calls") or [])
        if message["role"] == "tool" and message.get("tool_call_id") not in call_ids:
            raise InvalidRequest(f"No tool call found for function call output with call_id "
                                 f"{message.get('tool_call_id')}.", param="input")


def chat_body(req: ResponsesRequest, messages: Sequence[dict[str, Any]], stream: bool | None = None) -> dict[str, Any]:
    """The chat completions body for `messages` (from `conversation`); instructions go first as the
    system message (they are not carried over to the next response, as OpenAI specifies)."""
    system = [{"role": "system", "content": req.instructions}] if req.instructions else []
    body: dict[str, Any] = {**req.extra, "model": req.model, "messages": [*system, *messages]}
    stream = req.stream if stream is None else stream
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    optional = {"max_completion_tokens": req.max_output_tokens, "temperature": req.temperature,
                "top_p": req.top_p, "reasoning_effort": req.reasoning_effort, "user": req.user,
                "response_format": _response_format(req.text_format)}
    body.update({k: v for k, v in optional.items() if v is not None})
    if req.logprobs or req.top_logprobs:
        body.update(logprobs=True, top_logprobs=req.top_logprobs or 0)
    if req.tools:
        body["tools"] = [_tool(t) for t in req.tools]
        body["tool_choice"] = _tool_choice(req.tool_choice)
        body["parallel_tool_calls"] = req.parallel_tool_calls
    return body
