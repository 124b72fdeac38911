"""Capture: a live answer turned into the whole body the cache stores. Non-streamed bodies are stored
as they are; streams (SSE / NDJSON) are put back together. Anything incomplete or carrying an error
gives None: only answers that ended normally are stored. A Responses answer is stored as its final
Response object (from the JSON body, or the stream's `response.completed` / `response.incomplete`
event), and only when every output item is one the replay can rebuild."""

from __future__ import annotations

import json
from typing import Any

from velollm.wire.framing import sse_data


def _sse_payloads(raw: bytes) -> tuple[list[Any], bool]:
    """A stream's SSE `data:` payloads, parsed, and whether it sent [DONE]."""
    datas = [sse_data(event) for event in raw.replace(b"\r\n", b"\n").split(b"\n\n")]
    return [json.loads(d) for d in datas if d and d != b"[DONE]"], b"[DONE]" in datas


def _merge_tool_call(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    call = calls.setdefault(delta.get("index", len(calls)), {"id": None, "type": "function",
                                                             "function": {"name": "", "arguments": ""}})
    if delta.get("id"):
        call["id"] = delta["id"]
    fn = delta.get("function") or {}
    call["function"]["name"] += fn.get("name") or ""
    call["function"]["arguments"] += fn.get("arguments") or ""


def _openai_stream(chunks: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    if not chunks or any("error" in c for c in chunks):
        return None
    choices: dict[int, dict[str, Any]] = {}
    calls: dict[int, dict[int, dict[str, Any]]] = {}
    usage = None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for c in chunk.get("choices") or []:
            i = c.get("index", 0)
            state = choices.setdefault(i, {"index": i, "text": "", "logprobs": None, "finish_reason": None})
            piece = (c.get("delta") or {}).get("content") if kind == "chat" else c.get("text")
            state["text"] += piece or ""
            for call in (c.get("delta") or {}).get("tool_calls") or []:
                _merge_tool_call(calls.setdefault(i, {}), call)
            if c.get("logprobs"):
                state["logprobs"] = _merge_logprobs(state["logprobs"], c["logprobs"])
            if c.get("finish_reason"):
                state["finish_reason"] = c["finish_reason"]
    if any(s["finish_reason"] is None for s in choices.values()):
        return None
    first = chunks[0]
    out_choices = []
    for i in sorted(choices):
        s = choices[i]
        if kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": s["text"]}
            if calls.get(i):
                message["content"] = s["text"] or None
                message["tool_calls"] = [calls[i][n] for n in sorted(calls[i])]
            out_choices.append({"index": i, "message": message, "logprobs": s["logprobs"],
                                "finish_reason": s["finish_reason"]})
        else:
            out_choices.append({"index": i, "text": s["text"], "logprobs": s["logprobs"],
                                "finish_reason": s["finish_reason"]})
    body = {"id": first.get("id"), "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": first.get("created"), "model": first.get("model"), "choices": out_choices}
    if usage:
        body["usage"] = usage
    return body


def _merge_logprobs(acc: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Chat: {"content": [...]}; completions: parallel lists (tokens, token_logprobs, ...)."""
    if acc is None:
        return {k: list(v) if isinstance(v, list) else v for k, v in new.items()}
    for k, v in new.items():
        if isinstance(v, list) and isinstance(acc.get(k), list):
            acc[k].extend(v)
    return acc


def _ollama_stream(lines: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    if not lines or any("error" in line for line in lines) or not lines[-1].get("done"):
        return None
    final = dict(lines[-1])
    if kind == "ollama_chat":
        text = "".join((line.get("message") or {}).get("content") or "" for line in lines)
        calls = [c for line in lines for c in (line.get("message") or {}).get("tool_calls") or []]
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = calls
        final["message"] = message
    else:
        final["response"] = "".join(line.get("response") or "" for line in lines)
    return final


_RESPONSE_ITEMS = frozenset({"message", "reasoning", "function_call"})
_RESPONSE_ENDS = frozenset({"response.completed", "response.incomplete"})


def _response(raw: bytes, media_type: str) -> dict[str, Any] | None:
    if media_type.startswith("text/event-stream"):
        events, _ = _sse_payloads(raw)
        last = events[-1] if events else None
        if not isinstance(last, dict) or last.get("type") not in _RESPONSE_ENDS:
            return None
        body = last.get("response")
    else:
        body = json.loads(raw)
    if not isinstance(body, dict) or body.get("status") not in ("completed", "incomplete"):
        return None
    output = body.get("output")
    if not isinstance(output, list) or not all(isinstance(i, dict) and i.get("type") in _RESPONSE_ITEMS
                                               for i in output):
        return None
    return body


def capture(kind: str, raw: bytes, media_type: str) -> dict[str, Any] | None:
    """The whole answer in `raw` (a response body of the given media type), or None."""
    try:
        if kind == "responses":
            return _response(raw, media_type)
        if media_type.startswith("text/event-stream"):
            chunks, done = _sse_payloads(raw)
            return _openai_stream(chunks, kind) if done else None
        if media_type.startswith("application/x-ndjson"):
            return _ollama_stream([json.loads(line) for line in raw.splitlines() if line.strip()], kind)
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or "error" in body:
        return None
    if kind.startswith("ollama") and not body.get("done", False):
        return None
    return body
