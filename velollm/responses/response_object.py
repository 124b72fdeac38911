"""The Response object (`"object": "response"`) built from the request and what the model answered."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from velollm.responses.items import (
    encrypt_reasoning,
    new_id,
    output_items,
    text_logprobs,
)
from velollm.responses.request import ResponsesRequest


def usage_from_chat(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Chat `usage` in the Responses shape (input/output tokens, cached and reasoning details)."""
    if not usage:
        return None
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + completion}


def _tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "function", "name": tool["name"], "description": tool.get("description"),
            "parameters": tool.get("parameters"), "strict": tool.get("strict", True)}


class ResponseShell:
    """The fields of one response that come from its request; `build` adds what the model said."""

    def __init__(self, req: ResponsesRequest, response_id: str | None = None, created_at: int | None = None) -> None:
        self.req = req
        self.id = response_id or new_id("resp")
        self.created_at = created_at if created_at is not None else int(time.time())

    def build(self, status: str, output: Sequence[Mapping[str, Any]] = (), usage: Mapping[str, Any] | None = None,
              error: Mapping[str, Any] | None = None, incomplete_reason: str | None = None) -> dict[str, Any]:
        req = self.req
        if req.encrypted_reasoning:
            output = [encrypt_reasoning(o) if o.get("type") == "reasoning" else o for o in output]
        return {
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "completed_at": int(time.time()) if status == "completed" else None,
            "error": dict(error) if error else None,
            "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
            "instructions": req.instructions, "max_output_tokens": req.max_output_tokens, "model": req.model,
            "output": [dict(o) for o in output], "parallel_tool_calls": req.parallel_tool_calls,
            "previous_response_id": req.previous_response_id,
            "reasoning": {"effort": req.reasoning_effort, "summary": None}, "store": req.store,
            "temperature": req.temperature if req.temperature is not None else 1.0,
            "text": {"format": req.text_format}, "tool_choice": req.tool_choice,
            "tools": [_tool(t) for t in req.tools], "top_p": req.top_p if req.top_p is not None else 1.0,
            "truncation": req.truncation, "usage": dict(usage) if usage else None, "user": req.user,
            "metadata": dict(req.metadata), "background": req.background, "top_logprobs": req.top_logprobs,
        }

    def from_chat_completion(self, completion: Mapping[str, Any]) -> dict[str, Any]:
        """A whole chat completion (first choice) as a finished response."""
        choice = (completion.get("choices") or [{}])[0]
        finish = choice.get("finish_reason")
        status, reason = ("incomplete", "max_output_tokens") if finish == "length" else ("completed", None)
        message = choice.get("message") or {}
        logprobs = text_logprobs(choice.get("logprobs"))
        if message.get("reasoning_content") or message.get("reasoning"):  # the thinking's tokens come first
            details = (completion.get("usage") or {}).get("completion_tokens_details") or {}
            logprobs = logprobs[int(details.get("reasoning_tokens") or 0):]
        items = output_items(message, status == "incomplete", logprobs)
        return self.build(status, items, usage_from_chat(completion.get("usage")), incomplete_reason=reason)
