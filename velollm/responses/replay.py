"""A finished Response answered again (the response cache's hit): its output as the chat chunks that
would have produced it, so that ResponseEventStream builds the new response (new ids, a new call id per
function call) and its stream exactly as for a live answer."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from velollm.responses.items import new_id


def _text(item: Mapping[str, Any]) -> str:
    return "".join(str(p.get("text", "")) for p in item.get("content") or [] if isinstance(p, dict))


def _cached_usage(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Chat usage with the whole input counted as cached (what usage_from_chat turns back)."""
    if not usage:
        return None
    prompt = int(usage.get("input_tokens") or 0)
    reasoning = (usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0
    return {"prompt_tokens": prompt, "completion_tokens": int(usage.get("output_tokens") or 0),
            "prompt_tokens_details": {"cached_tokens": prompt},
            "completion_tokens_details": {"reasoning_tokens": reasoning}}


def replay_chunks(response: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Chat completion chunks for the output of `response` (completed or incomplete), usage last."""
    num_calls = 0
    for item in response.get("output") or []:
        kind = item.get("type")
        logprobs = None
        if kind == "reasoning":
            delta: dict[str, Any] = {"reasoning_content": _text(item)}
        elif kind == "message":
            delta = {"content": _text(item)}
            # output_text logprobs have chat's fields (token, bytes, logprob, top_logprobs)
            logprobs = {"content": [lp for p in item.get("content") or [] if isinstance(p, dict)
                                    for lp in p.get("logprobs") or []]}
        elif kind == "function_call":
            call = {"index": num_calls, "id": new_id("call"), "type": "function",
                    "function": {"name": item.get("name", ""), "arguments": item.get("arguments", "")}}
            delta, num_calls = {"tool_calls": [call]}, num_calls + 1
        else:
            continue
        yield {"choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": None}]}
    finish = "length" if response.get("status") == "incomplete" else ("tool_calls" if num_calls else "stop")
    yield {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
    usage = _cached_usage(response.get("usage"))
    if usage is not None:
        yield {"choices": [], "usage": usage}
