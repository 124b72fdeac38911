"""OpenAIAnswerSplit: thinking written into an OpenAI-compatible answer's content, moved to reasoning_content.

For upstreams that return `<think>...</think>` inside `content` (a server without a reasoning
parser). Answers that already carry `reasoning_content` / `reasoning` (vLLM, llama.cpp, Ollama's
OpenAI layer) pass unchanged; so does content that does not start with the open tag.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from velollm.reasoning.parser import ReasoningDelta, ReasoningParser, ReasoningStream

_REASONING_KEYS = ("reasoning_content", "reasoning")


def _has_reasoning(obj: Mapping[str, Any]) -> bool:
    return any(obj.get(k) for k in _REASONING_KEYS)


def _apply(target: dict[str, Any], split: ReasoningDelta, keep_reasoning: bool, *, whole: bool) -> None:
    if split.reasoning and keep_reasoning:
        target["reasoning_content"] = split.reasoning
    # A delta keeps its content key even when its text is held back or was thinking: servers without
    # usage in streams send one content delta per token, and converters count them.
    target["content"] = split.content or (None if whole and target.get("tool_calls") else "")


class OpenAIAnswerSplit:
    """Splits one chat answer, whole (`completion`) or streamed (`chunk` per parsed SSE chunk).

    keep_reasoning False: the client turned thinking off; the model's thinking is dropped."""

    def __init__(self, parser: ReasoningParser, keep_reasoning: bool = True) -> None:
        self.parser = parser
        self.keep_reasoning = keep_reasoning
        self._streams: dict[int, ReasoningStream | None] = {}  # None: the upstream splits itself

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        for choice in body.get("choices") or []:
            message = choice.get("message")
            if isinstance(message, dict) and isinstance(message.get("content"), str) and not _has_reasoning(message):
                _apply(message, self.parser.split(message["content"]), self.keep_reasoning, whole=True)
        return body

    def chunk(self, chunk: dict[str, Any]) -> dict[str, Any]:
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            index = choice.get("index", 0)
            if _has_reasoning(delta) and index not in self._streams:
                self._streams[index] = None
            stream = self._streams.setdefault(index, self.parser.stream())
            if stream is None:
                continue
            split = stream.feed(delta["content"]) if isinstance(delta.get("content"), str) else ReasoningDelta()
            if choice.get("finish_reason") is not None:
                split += stream.finish()
            if isinstance(delta.get("content"), str) or split:
                _apply(delta, split, self.keep_reasoning, whole=False)
        return chunk
