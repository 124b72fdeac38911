"""A stream asked for, a whole answer received: an OpenAI-compatible upstream that ignores `stream: true` (a server
without streaming, a gateway that buffers) answers one JSON body. Relayed as it came, the openai SDK reads it as an
SSE stream with no events: an empty answer and no error. The body is sent as the events a live stream has: the
role, the content and tool calls, the finish reason, usage when `stream_options.include_usage` asks, [DONE]."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from velollm.proxy.openai_via_ollama import error_events
from velollm.wire.errors import error_message
from velollm.wire.framing import SSE_DONE, sse_event

PATHS = ("/v1/chat/completions", "/v1/completions")


def asks_events(path: str, body: dict[str, Any]) -> bool:
    """Whether an OpenAI request to `path` asked for a stream."""
    return path in PATHS and bool(body.get("stream"))


def sse_body(whole: Any, path: str, body: dict[str, Any]) -> bytes:
    """The SSE events of the whole answer `whole` to the request `body`; an error body (in a 200) is the error
    event a broken stream ends with."""
    if not isinstance(whole, dict) or "error" in whole:
        return b"".join(error_events(error_message(whole)))
    chat = path == "/v1/chat/completions"
    env = {"id": whole.get("id"), "object": "chat.completion.chunk" if chat else "text_completion",
           "created": whole.get("created"), "model": whole.get("model", body.get("model"))}
    chunks = [{**env, "choices": [c]} for choice in whole.get("choices") or [] if isinstance(choice, dict)
              for c in (_chat_choices(choice) if chat else _completion_choices(choice))]
    options = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
    if options.get("include_usage") and whole.get("usage"):
        chunks.append({**env, "choices": [], "usage": whole["usage"]})
    return b"".join([*(sse_event(c) for c in chunks), SSE_DONE])


def _chat_choices(choice: dict[str, Any]) -> Iterator[dict[str, Any]]:
    i = choice.get("index", 0)
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    delta: dict[str, Any] = {"role": message.get("role", "assistant"), "content": message.get("content") or ""}
    for field in ("reasoning_content", "reasoning", "refusal"):
        if message.get(field):
            delta[field] = message[field]
    if message.get("tool_calls"):
        delta["tool_calls"] = [{"index": n, **call} for n, call in enumerate(message["tool_calls"])]
    yield {"index": i, "delta": delta, "logprobs": choice.get("logprobs"), "finish_reason": None}
    yield {"index": i, "delta": {}, "logprobs": None, "finish_reason": choice.get("finish_reason")}


def _completion_choices(choice: dict[str, Any]) -> Iterator[dict[str, Any]]:
    i = choice.get("index", 0)
    yield {"index": i, "text": choice.get("text") or "", "logprobs": choice.get("logprobs"), "finish_reason": None}
    yield {"index": i, "text": "", "logprobs": None, "finish_reason": choice.get("finish_reason")}
