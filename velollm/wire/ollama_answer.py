"""The body of an Ollama /api/chat or /api/generate answer object (one stream line or the whole answer)."""

from __future__ import annotations

from typing import Any

from velollm.wire.timestamps import now_rfc3339


def ollama_answer(model: str, chat: bool, text: str = "", thinking: str = "",
                  tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """/api/chat puts the text in `message` (with `thinking` and `tool_calls` when there are any);
    /api/generate in `response` (and `thinking`)."""
    out: dict[str, Any] = {"model": model, "created_at": now_rfc3339()}
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if thinking:
            message["thinking"] = thinking
        if tool_calls:
            message["tool_calls"] = tool_calls
        out["message"] = message
    else:
        out["response"] = text
        if thinking:
            out["thinking"] = thinking
    return out
