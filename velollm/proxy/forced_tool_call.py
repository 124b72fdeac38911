"""tool_choice "required" or a named function, for an Ollama upstream, which has no tool_choice.

Ollama ignores the field (ollama#8421): the model answers text as often as not, and a client that asked
for a call (LangChain's `with_structured_output(method="function_calling")` names its tool) got none.
The upstream is asked instead for its `format`: a JSON Schema of one call, `{"name": <one of the tools>,
"arguments": <that tool's parameters>}`, which Ollama constrains the answer to; the answer's JSON then
becomes the call. Such a request goes upstream whole (not streamed): its text is no answer until it has
become a call; a client that streams gets the call in one chunk, as OpenAI streams a short call.
"""

from __future__ import annotations

import json
from typing import Any


def forced_tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The function tools one of which the answer must call; None when the model is free to answer text."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    choice = body.get("tool_choice")
    if not tools:
        return None
    if choice == "required":
        return tools
    if isinstance(choice, dict) and choice.get("type", "function") == "function":
        name = (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) else None
        named = [t for t in tools if t["function"].get("name") == name]
        return named or None
    return None


def call_format(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """Ollama's `format` for one call to one of `tools`."""
    variants = []
    for tool in tools:
        function = tool["function"]
        parameters = function.get("parameters")
        arguments = parameters if isinstance(parameters, dict) else {"type": "object"}
        variants.append({"type": "object",
                         "properties": {"name": {"type": "string", "enum": [function.get("name")]},
                                        "arguments": arguments},
                         "required": ["name", "arguments"]})
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def as_call(answer: dict[str, Any]) -> dict[str, Any]:
    """A whole /api/chat answer whose content is the constrained call, with that call as its tool call. An
    answer that already holds calls, or whose content is no call (cut by num_predict), is left as it is:
    its text is never dropped."""
    message = answer.get("message")
    if not isinstance(message, dict) or message.get("tool_calls"):
        return answer
    try:
        call = json.loads(message.get("content") or "")
    except ValueError:
        return answer
    if not (isinstance(call, dict) and isinstance(call.get("name"), str) and isinstance(call.get("arguments"), dict)):
        return answer
    function = {"name": call["name"], "arguments": call["arguments"]}
    return {**answer, "message": {**message, "content": "", "tool_calls": [{"function": function}]}}
