"""The `tool_calls` of a message in a converted request (Ollama's to OpenAI's and back), checked once for both."""

from __future__ import annotations

from typing import Any

from velollm.errors import InvalidRequest


def message_tool_calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The message's tool calls ([] when it has none): an array of objects, each with a function object, else a
    400 in the client's format (a wrong type here was a 500 from deep in the conversion)."""
    calls = message.get("tool_calls")
    if not calls:
        return []
    if not isinstance(calls, list) or not all(isinstance(c, dict) and isinstance(c.get("function") or {}, dict)
                                              for c in calls):
        raise InvalidRequest("tool_calls must be an array of objects, each with a function object", param="messages")
    return calls
