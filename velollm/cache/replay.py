"""Replay: a cached answer served again, as the new request asks for it: one JSON body, or a stream
framed like a live one (SSE for /v1, NDJSON for /api), with usage counting the prompt as cached.

A hit is a new answer: it gets a new completion id, `created` and tool-call ids (`fresh_call_id`). Agents key
tool results on the call ids, so two turns of one conversation answered from the cache must not share one.

A Responses hit is not replayed here: a new response must be made of it (new ids, stored when the request
says `store`), so the middleware hands the cached Response to the endpoint (`hand_over_hit`), which builds
it as it builds a live one (velollm/responses/replay.py)."""

from __future__ import annotations

import copy
import secrets
import string
import time
import uuid
from collections.abc import Iterator
from typing import Any

from velollm.wire import scope_state
from velollm.wire.framing import NDJSON_MEDIA_TYPE, SSE_DONE, SSE_MEDIA_TYPE, dumps_bytes, ndjson_line, sse_event
from velollm.wire.timestamps import now_rfc3339

_CACHED_ANSWER = "velollm.cached_answer"
_LOWER_ID = string.ascii_lowercase + string.digits
_MIXED_ID = string.ascii_letters + string.digits
_MIN_ID_CHARS = 8  # random characters at least: the cached id's may be as short as "call_1"


def hand_over_hit(scope: dict[str, Any], answer: dict[str, Any]) -> None:
    """Leaves a cached answer for the endpoint to answer the request with (`take_hit`)."""
    scope_state.leave(scope, _CACHED_ANSWER, answer)


def take_hit(scope: dict[str, Any]) -> dict[str, Any] | None:
    """The cached answer the response cache handed over for this request (once), or None."""
    return scope_state.take(scope, _CACHED_ANSWER)


def wants_stream(kind: str, body: dict[str, Any]) -> bool:
    """Ollama streams unless told not to; OpenAI only when asked."""
    default = kind.startswith("ollama")
    stream = body.get("stream", default)
    return default if stream is None else bool(stream)


def _cached_usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """OpenAI's way of saying the whole prompt came from a cache."""
    if not usage:
        return None
    out = dict(usage)
    out["prompt_tokens_details"] = {**(usage.get("prompt_tokens_details") or {}),
                                    "cached_tokens": usage.get("prompt_tokens", 0)}
    return out


def fresh_call_id(old: str) -> str:
    """A new tool-call id shaped like `old`: its prefix up to the last "_" and as many random characters, from
    lowercase and digits when the old ones were (Ollama's "call_" + 8), else letters and digits; templates that
    check the form (Mistral's 9 alphanumerics) take it as they took the original."""
    head, sep, tail = old.rpartition("_")
    alphabet = _LOWER_ID if tail == tail.lower() else _MIXED_ID
    return head + sep + "".join(secrets.choice(alphabet) for _ in range(max(len(tail), _MIN_ID_CHARS)))


def _renew_call_ids(calls: Any) -> None:
    """Gives each call (OpenAI's or Ollama's, which may carry an id) of a replayed answer a new id, in place."""
    for call in calls if isinstance(calls, list) else []:
        if isinstance(call, dict) and isinstance(call.get("id"), str) and call["id"]:
            call["id"] = fresh_call_id(call["id"])


def _openai_whole(answer: dict[str, Any], model: str) -> dict[str, Any]:
    out = copy.deepcopy(answer)
    prefix = "chatcmpl" if out.get("object") == "chat.completion" else "cmpl"
    out.update(id=f"{prefix}-{uuid.uuid4().hex}", created=int(time.time()), model=model)
    for choice in out.get("choices") or []:
        if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
            _renew_call_ids(choice["message"].get("tool_calls"))
    usage = _cached_usage(out.get("usage"))
    if usage is not None:
        out["usage"] = usage
    return out


def _ollama_whole(answer: dict[str, Any], model: str, elapsed_ns: int) -> dict[str, Any]:
    out = copy.deepcopy(answer)
    out.update(model=model, created_at=now_rfc3339(), total_duration=elapsed_ns, load_duration=0,
               prompt_eval_duration=0, eval_duration=elapsed_ns)
    if isinstance(out.get("message"), dict):
        _renew_call_ids(out["message"].get("tool_calls"))
    _renew_call_ids(out.get("tool_calls"))  # /api/generate's final object may carry calls too
    return out


def _chat_chunks(whole: dict[str, Any]) -> Iterator[dict[str, Any]]:
    env = {"id": whole["id"], "object": "chat.completion.chunk", "created": whole["created"], "model": whole["model"]}
    for choice in whole.get("choices", []):
        i = choice.get("index", 0)
        message = choice.get("message") or {}
        yield {**env, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                    "finish_reason": None}]}
        delta: dict[str, Any] = {}
        if message.get("content"):
            delta["content"] = message["content"]
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": n, **call} for n, call in enumerate(message["tool_calls"])]
        if delta or choice.get("logprobs"):
            yield {**env, "choices": [{"index": i, "delta": delta, "logprobs": choice.get("logprobs"),
                                        "finish_reason": None}]}
        yield {**env, "choices": [{"index": i, "delta": {}, "logprobs": None,
                                    "finish_reason": choice.get("finish_reason")}]}


def _completion_chunks(whole: dict[str, Any]) -> Iterator[dict[str, Any]]:
    env = {"id": whole["id"], "object": "text_completion", "created": whole["created"], "model": whole["model"]}
    for choice in whole.get("choices", []):
        i = choice.get("index", 0)
        yield {**env, "choices": [{"index": i, "text": choice.get("text", ""), "logprobs": choice.get("logprobs"),
                                    "finish_reason": None}]}
        yield {**env, "choices": [{"index": i, "text": "", "logprobs": None,
                                    "finish_reason": choice.get("finish_reason")}]}


def _ollama_lines(whole: dict[str, Any], kind: str) -> Iterator[dict[str, Any]]:
    head = {"model": whole["model"], "created_at": whole["created_at"]}
    if kind == "ollama_chat":
        message = whole.get("message") or {}
        first = {k: v for k, v in message.items() if k != "content"} | {"content": message.get("content", "")}
        yield {**head, "message": first, "done": False}
        yield {**whole, "message": {"role": message.get("role", "assistant"), "content": ""}}
    else:
        yield {**head, "response": whole.get("response", ""), "done": False}
        yield {**whole, "response": ""}


def replay(kind: str, answer: dict[str, Any], request: dict[str, Any], elapsed_ns: int
           ) -> tuple[list[bytes], str]:
    """(body parts, media type) for the cached `answer` to `request`."""
    model = str(request.get("model", answer.get("model", "")))
    stream = wants_stream(kind, request)
    if kind.startswith("ollama"):
        whole = _ollama_whole(answer, model, elapsed_ns)
        if not stream:
            return [dumps_bytes(whole)], "application/json"
        return [ndjson_line(line) for line in _ollama_lines(whole, kind)], NDJSON_MEDIA_TYPE
    whole = _openai_whole(answer, model)
    if not stream:
        return [dumps_bytes(whole)], "application/json"
    chunks = list(_chat_chunks(whole) if kind == "chat" else _completion_chunks(whole))
    options = request.get("stream_options") if isinstance(request.get("stream_options"), dict) else {}
    if options.get("include_usage") and whole.get("usage"):
        chunks.append({**{k: chunks[0][k] for k in ("id", "object", "created", "model")}, "choices": [],
                       "usage": whole["usage"]})
    return [*(sse_event(c) for c in chunks), SSE_DONE], SSE_MEDIA_TYPE
