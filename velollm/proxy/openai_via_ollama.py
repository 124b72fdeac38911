"""OpenAI requests served by an Ollama upstream: /v1/* → /api/chat, /api/generate and back.

Mirrors Ollama's own OpenAI layer (openai/openai.go) so that the answers equal what the same Ollama
would give on its /v1 endpoints: temperature and top_p default to 1.0, tool-call arguments travel as
objects upstream and as JSON strings to the client, `stop` becomes `tool_calls` when tools were called.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from velollm.errors import InvalidRequest
from velollm.proxy.forced_tool_call import call_format, forced_tools
from velollm.proxy.message_calls import message_tool_calls
from velollm.proxy.openai_numbers import max_tokens_field, sampling_number
from velollm.reasoning import ThinkSetting
from velollm.wire.errors import APIError, error_code, openai_error_body
from velollm.wire.framing import SSE_DONE, sse_event

# What Ollama's OpenAI layer sends as every answer's and chunk's system_fingerprint (clients such as LangChain
# show it in response_metadata).
FINGERPRINT = "fp_ollama"


# --- requests ---------------------------------------------------------------------------------


def chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """/v1/chat/completions body → /api/chat body."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty array", param="messages")
    out: dict[str, Any] = {"model": body.get("model"), "messages": _messages(messages),
                           "stream": bool(body.get("stream", False)), "options": _options(body)}
    tools = body.get("tools")
    if tools and body.get("tool_choice") != "none":
        out["tools"] = tools
    _common(body, out)
    forced = forced_tools(body)
    if forced:  # Ollama has no tool_choice: the answer is constrained to a call, taken whole (forced_tool_call.py)
        out["format"], out["stream"] = call_format(forced), False
    return out


def completion_request(body: dict[str, Any]) -> dict[str, Any]:
    """/v1/completions body → /api/generate body (raw: an OpenAI completion applies no template)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequest("an Ollama upstream takes one string prompt", param="prompt")
    out: dict[str, Any] = {"model": body.get("model"), "prompt": prompt, "raw": True,
                           "stream": bool(body.get("stream", False)), "options": _options(body)}
    if body.get("suffix"):
        out["suffix"] = body["suffix"]
    logprobs = body.get("logprobs")
    if isinstance(logprobs, int) and not isinstance(logprobs, bool) and logprobs > 0:
        out["logprobs"], out["top_logprobs"] = True, logprobs
    _common({k: v for k, v in body.items() if k not in ("logprobs", "top_logprobs")}, out)
    return out


def _common(body: dict[str, Any], out: dict[str, Any]) -> None:
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise InvalidRequest(f"n must be an integer of at least 1, got {n!r}", param="n")  # 0 was one answer
    if (n or 1) != 1:
        raise InvalidRequest("n > 1 is not supported by an Ollama upstream", param="n")
    fmt = _format(body.get("response_format"))
    if fmt is None:
        fmt = _vllm_format(body)
    if fmt is not None:
        out["format"] = fmt
    reasoning = body.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, dict):
        raise InvalidRequest("reasoning must be an object", param="reasoning")
    effort = body.get("reasoning_effort") or (reasoning or {}).get("effort")
    think = ThinkSetting.from_openai(effort).to_ollama()  # Ollama's own mapping of the efforts
    if think is not None:
        out["think"] = think
    if body.get("logprobs") is True:
        out["logprobs"] = True
        if body.get("top_logprobs"):
            out["top_logprobs"] = body["top_logprobs"]
    if "keep_alive" in body:
        out["keep_alive"] = body["keep_alive"]
    if not isinstance(body.get("stream_options") or {}, dict):  # read once the upstream answers: checked before
        raise InvalidRequest("stream_options must be an object", param="stream_options")


def _options(body: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {
        "temperature": 1.0 if body.get("temperature") is None else sampling_number(body, "temperature"),
        "top_p": 1.0 if body.get("top_p") is None else sampling_number(body, "top_p"),
    }
    stop = body.get("stop")
    if stop:
        options["stop"] = _stop_list(stop)
    max_tokens = max_tokens_field(body)
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    for key, target in (("seed", "seed"), ("frequency_penalty", "frequency_penalty"),
                        ("presence_penalty", "presence_penalty"), ("top_k", "top_k"), ("min_p", "min_p"),
                        ("repetition_penalty", "repeat_penalty")):
        if body.get(key) is not None:
            options[target] = sampling_number(body, key)
    return options


def _stop_list(stop: Any) -> list[str]:
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return stop
    raise InvalidRequest("stop must be a string or an array of strings", param="stop")


def _format(response_format: Any) -> Any:
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if spec is not None and not isinstance(spec, dict):
            raise InvalidRequest("response_format.json_schema must be an object", param="response_format")
        return (spec or {}).get("schema") or "json"
    return None


def _vllm_format(body: dict[str, Any]) -> Any:
    """vLLM's constraint keys (guided_json, structured_outputs.json; velollm/api/vllm_structured.py serves them
    natively) as Ollama's `format`; a regex, choice or grammar, which Ollama cannot constrain to, is a 400
    rather than an unconstrained answer."""
    so = body.get("structured_outputs")
    if so is not None and not isinstance(so, dict):
        raise InvalidRequest("structured_outputs must be an object", param="structured_outputs")
    so = so or {}
    for key, value in (("guided_regex", body.get("guided_regex")), ("guided_choice", body.get("guided_choice")),
                       ("guided_grammar", body.get("guided_grammar")), *(
                           (f"structured_outputs.{k}", so.get(k)) for k in ("regex", "choice", "grammar",
                                                                            "structural_tag"))):
        if value is not None:
            raise InvalidRequest(f"{key} is not supported by an Ollama upstream (its format takes JSON only)",
                                 param=key)
    schema = body.get("guided_json") if body.get("guided_json") is not None else so.get("json")
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise InvalidRequest(f"guided_json is not JSON: {exc}", param="guided_json") from None
    if isinstance(schema, dict):
        return schema
    return "json" if so.get("json_object") else None


def _messages(messages: list[Any]) -> list[dict[str, Any]]:
    names_by_id: dict[str, str] = {}
    out = []
    for message in messages:
        if not isinstance(message, dict):
            raise InvalidRequest("each message must be an object", param="messages")
        text, images = _content(message.get("content"))
        converted: dict[str, Any] = {"role": message.get("role"), "content": text}
        if images:
            converted["images"] = images
        thinking = message.get("reasoning") or message.get("reasoning_content")
        if thinking:
            converted["thinking"] = thinking
        calls = message_tool_calls(message)
        if calls:
            converted["tool_calls"] = [_tool_call_in(c, names_by_id) for c in calls]
        if message.get("role") == "tool":
            call_id = message.get("tool_call_id")
            name = message.get("name") or names_by_id.get(call_id or "")
            if name:
                converted["tool_name"] = name
            if call_id:
                converted["tool_call_id"] = call_id
        out.append(converted)
    return out


def _content(content: Any) -> tuple[str, list[str]]:
    if content is None or isinstance(content, str):
        return content or "", []
    if not isinstance(content, list):
        raise InvalidRequest("message content must be a string or an array of parts", param="messages")
    texts, images = [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(part.get("text", ""))
        elif kind == "image_url":
            url = part["image_url"]["url"] if isinstance(part.get("image_url"), dict) else part.get("image_url")
            if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
                raise InvalidRequest("only base64 data URLs are supported for images", param="messages")
            images.append(url.split(";base64,", 1)[1])
        else:
            raise InvalidRequest(f"unsupported content part type {kind!r}", param="messages")
    return "\n".join(texts), images


def _tool_call_in(call: dict[str, Any], names_by_id: dict[str, str]) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError as exc:
            raise InvalidRequest("invalid tool call arguments", param="messages") from exc
    out: dict[str, Any] = {"function": {"name": function.get("name"), "arguments": arguments or {}}}
    if call.get("id"):
        out["id"] = call["id"]
        names_by_id[call["id"]] = function.get("name")
    return out


# --- answers ----------------------------------------------------------------------------------


def finish_reason(chunk: dict[str, Any], called_tools: bool) -> str:
    if called_tools:
        return "tool_calls"
    return "length" if chunk.get("done_reason") == "length" else "stop"


def usage(chunk: dict[str, Any]) -> dict[str, int]:
    prompt, completion = int(chunk.get("prompt_eval_count") or 0), int(chunk.get("eval_count") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def tool_calls_out(calls: list[dict[str, Any]], first_index: int = 0) -> list[dict[str, Any]]:
    out = []
    for i, call in enumerate(calls):
        function = call.get("function") or {}
        arguments = function.get("arguments")
        out.append({"index": first_index + i, "id": call.get("id") or _call_id(), "type": "function",
                    "function": {"name": function.get("name"),
                                 "arguments": arguments if isinstance(arguments, str)
                                 else json.dumps(arguments or {}, ensure_ascii=False)}})
    return out


def chat_response(answer: dict[str, Any], model: str) -> dict[str, Any]:
    """A non-streamed /api/chat answer → a chat.completion object."""
    message = answer.get("message") or {}
    out_message: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    if message.get("thinking"):  # Ollama's name, and vLLM's / DeepSeek's
        out_message["reasoning"] = out_message["reasoning_content"] = message["thinking"]
    calls = message.get("tool_calls") or []
    if calls:
        out_message["tool_calls"] = tool_calls_out(calls)
    choice: dict[str, Any] = {"index": 0, "message": out_message, "finish_reason": finish_reason(answer, bool(calls)),
                              "logprobs": {"content": answer["logprobs"]} if answer.get("logprobs") else None}
    return {"id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion", "created": int(time.time()),
            "model": answer.get("model") or model, "system_fingerprint": FINGERPRINT, "choices": [choice],
            "usage": usage(answer)}


def completion_response(answer: dict[str, Any], model: str) -> dict[str, Any]:
    """A non-streamed /api/generate answer → a text_completion object."""
    choice = {"index": 0, "text": answer.get("response") or "", "finish_reason": finish_reason(answer, False),
              "logprobs": _completion_logprobs(answer.get("logprobs"))}
    return {"id": f"cmpl-{secrets.token_hex(12)}", "object": "text_completion", "created": int(time.time()),
            "model": answer.get("model") or model, "system_fingerprint": FINGERPRINT, "choices": [choice],
            "usage": usage(answer)}


def _completion_logprobs(entries: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    if not entries:
        return None
    return {"tokens": [e.get("token") for e in entries], "token_logprobs": [e.get("logprob") for e in entries],
            "top_logprobs": [{t.get("token"): t.get("logprob") for t in e.get("top_logprobs") or []} for e in entries],
            "text_offset": []}


class ChatStream:
    """Ollama /api/chat NDJSON objects → OpenAI chat.completion.chunk SSE events."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = f"chatcmpl-{secrets.token_hex(12)}"
        self.created = int(time.time())
        self._sent_role = False
        self._num_calls = 0

    def _event(self, delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
        chunk: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                 "model": self.model, "system_fingerprint": FINGERPRINT}
        chunk["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": extra.pop("logprobs", None),
                                                      "finish_reason": finish}]
        chunk.update(extra)
        return sse_event(chunk)

    def feed(self, obj: dict[str, Any]) -> list[bytes]:
        if "error" in obj:
            return error_events(str(obj["error"]), error_code(obj))
        message = obj.get("message") or {}
        deltas: list[tuple[dict[str, Any], Any, str | None]] = []
        if message.get("thinking"):
            deltas.append(({"reasoning": message["thinking"], "reasoning_content": message["thinking"]}, None, None))
        content = message.get("content") or ""
        calls = message.get("tool_calls") or []
        logprobs = {"content": obj["logprobs"]} if obj.get("logprobs") else None
        if content or calls or logprobs or (not self._sent_role and not deltas and not obj.get("done")):
            delta: dict[str, Any] = {"content": content}
            if calls:
                delta["tool_calls"] = tool_calls_out(calls, self._num_calls)
                self._num_calls += len(calls)
            deltas.append((delta, logprobs, None))
        if obj.get("done"):
            deltas.append(({}, None, finish_reason(obj, self._num_calls > 0)))
        events = []
        for delta, logprobs, finish in deltas:
            if not self._sent_role:
                delta = {"role": "assistant", **delta}
                self._sent_role = True
            events.append(self._event(delta, finish, logprobs=logprobs))
        if obj.get("done"):
            if self.include_usage:
                events.append(self._event(None, usage=usage(obj)))
            events.append(SSE_DONE)
        return events

    def error(self, message: str) -> list[bytes]:
        return error_events(message)


class CompletionStream:
    """Ollama /api/generate NDJSON objects → OpenAI text_completion SSE events."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = f"cmpl-{secrets.token_hex(12)}"
        self.created = int(time.time())

    def feed(self, obj: dict[str, Any]) -> list[bytes]:
        if "error" in obj:
            return error_events(str(obj["error"]), error_code(obj))
        base = {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "system_fingerprint": FINGERPRINT}
        events = []
        text = obj.get("response") or ""
        if text or not obj.get("done"):
            choice = {"index": 0, "text": text, "logprobs": _completion_logprobs(obj.get("logprobs")), "finish_reason": None}
            events.append(sse_event({**base, "choices": [choice]}))
        if obj.get("done"):
            events.append(sse_event({**base, "choices": [{"index": 0, "text": "", "logprobs": None,
                                                    "finish_reason": finish_reason(obj, False)}]}))
            if self.include_usage:
                events.append(sse_event({**base, "choices": [], "usage": usage(obj)}))
            events.append(SSE_DONE)
        return events

    def error(self, message: str) -> list[bytes]:
        return error_events(message)


def error_events(message: str, code: str | None = None) -> list[bytes]:
    """How an OpenAI stream that broke mid-way ends: an error event, then [DONE]."""
    return [sse_event(openai_error_body(APIError(502, message, code=code))), SSE_DONE]



def _call_id() -> str:
    return "call_" + "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))
