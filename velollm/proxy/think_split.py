"""Thinking in an OpenAI-compatible upstream's chat answers, split off the content.

A server without a reasoning parser (a plain llama.cpp or vLLM build, a hosted endpoint) returns a
thinking model's `<think>...</think>` inside `content`. Chat answers from an OpenAI-kind upstream go
through velollm.reasoning's OpenAIAnswerSplit before anything else reads them (tool-call repair,
conversion to Ollama's format), so clients get `reasoning_content` / `thinking`, whole and streamed.
Ollama upstreams split thinking themselves.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from velollm.errors import InvalidRequest
from velollm.reasoning import ThinkSetting, ThinkTagParser
from velollm.reasoning.openai_answer import OpenAIAnswerSplit
from velollm.wire.framing import sse_data

SPLIT_PATHS = ("/v1/chat/completions", "/api/chat", "/api/generate")


def splitter_for(path: str, body: dict[str, Any]) -> OpenAIAnswerSplit | None:
    """A splitter for a chat request's answer; thinking the client turned off is dropped."""
    if path not in SPLIT_PATHS:
        return None
    if path.startswith("/api/"):
        keep = body.get("think") is not False
    else:
        try:
            setting = ThinkSetting.from_openai(body.get("reasoning_effort"), body.get("chat_template_kwargs"))
        except InvalidRequest:  # the upstream judges the request as sent
            setting = ThinkSetting()
        keep = setting.enabled is not False and body.get("include_reasoning") is not False
    return OpenAIAnswerSplit(ThinkTagParser(), keep_reasoning=keep)


def split_json(data: bytes, split: OpenAIAnswerSplit) -> bytes:
    """A whole chat.completion body, split (anything that is not one passes unchanged)."""
    try:
        answer = json.loads(data)
    except ValueError:
        return data
    if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
        return data
    return json.dumps(split.completion(answer)).encode()


def _event(event: bytes, split: OpenAIAnswerSplit) -> bytes:
    data = sse_data(event)
    try:
        chunk = json.loads(data) if data and data != b"[DONE]" else None
    except ValueError:
        chunk = None
    if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list):
        return event + b"\n\n"
    return b"data: " + json.dumps(split.chunk(chunk)).encode() + b"\n\n"


async def split_events(chunks: AsyncIterator[bytes], split: OpenAIAnswerSplit) -> AsyncIterator[bytes]:
    """Whole SSE events in (as the relay hands them), the same events out with the thinking split."""
    async for data in chunks:
        events = data.replace(b"\r\n", b"\n").split(b"\n\n")
        yield b"".join(_event(e, split) for e in events[:-1] if e) + events[-1]
