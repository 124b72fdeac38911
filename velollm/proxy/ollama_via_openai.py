"""Ollama requests served by an OpenAI-compatible upstream: /api/* → /v1/* and back to NDJSON.

/api/chat → /v1/chat/completions. /api/generate → /v1/completions when it is raw or has a suffix
(text completion), else /v1/chat/completions with the prompt as the user turn, which is what Ollama
does when it applies the model's template. Tool calls, streamed in pieces by OpenAI servers, are
assembled and sent whole on the final line, as Ollama's own llama-server path does.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import secrets
import time
from typing import Any

from velollm.errors import InvalidRequest
from velollm.proxy.message_calls import message_tool_calls
from velollm.proxy.schema_format import schema_format
from velollm.wire.ollama_answer import ollama_answer
from velollm.wire.ollama_sampler import clamp_option

_OPTION_KEYS = (("temperature", "temperature"), ("top_p", "top_p"), ("seed", "seed"),
                ("frequency_penalty", "frequency_penalty"), ("presence_penalty", "presence_penalty"))
# Not in OpenAI's own API, but llama.cpp, vLLM and VeloLLM accept them: sent only when asked for.
_EXTRA_OPTION_KEYS = (("top_k", "top_k"), ("min_p", "min_p"), ("repeat_penalty", "repetition_penalty"))
_INTEGER_OPTIONS = frozenset({"seed", "top_k"})  # Go ints in Ollama's Options; the others are float32
# Arguments that are no JSON, wrapped into the object Ollama's clients require (answer_repair unwraps them).
RAW_ARGUMENTS = "_raw"


def chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """/api/chat body → /v1/chat/completions body."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequest("messages must be an array", param="messages")
    out = {"model": body.get("model"), "messages": _messages(messages)}
    if body.get("tools"):
        out["tools"] = body["tools"]
    return _common(body, out)


def generate_request(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """/api/generate body → (upstream path, body)."""
    prompt = body.get("prompt") or ""
    if body.get("raw") or body.get("suffix"):
        out: dict[str, Any] = {"model": body.get("model"), "prompt": prompt}
        if body.get("suffix"):
            out["suffix"] = body["suffix"]
        if body.get("logprobs"):
            out["logprobs"] = body.get("top_logprobs") or 1
        return "/v1/completions", _common({k: v for k, v in body.items() if k != "logprobs"}, out)
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": body["system"]})
    messages.append({"role": "user", "content": prompt, "images": body.get("images") or []})
    return "/v1/chat/completions", chat_request({**body, "messages": messages})


def _common(body: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    stream = body.get("stream", True) is not False
    out["stream"] = stream
    if stream:
        out["stream_options"] = {"include_usage": True}
    options = {} if body.get("options") is None else body["options"]
    if not isinstance(options, dict):
        raise InvalidRequest("options must be an object", param="options")
    for key, target in _OPTION_KEYS + _EXTRA_OPTION_KEYS:
        if options.get(key) is not None:  # a temperature of -1 is Ollama's greedy, not a 400
            out[target] = clamp_option(key, _typed_option(key, options[key]))
    if isinstance(options.get("stop"), str):  # as the native route and Ollama itself: an array or nothing
        raise InvalidRequest('option "stop" must be of type array (options.stop must be an array of strings, '
                             'got a string)', param="options.stop")
    if options.get("stop"):
        out["stop"] = options["stop"]
    num_predict = _num_predict(options.get("num_predict"))
    # Ollama's 0 and negatives mean no limit (its runner counts only a positive one), as on a native model: no
    # max_tokens, which vLLM and VeloLLM would refuse at 0
    if num_predict is not None and num_predict >= 1:
        out["max_tokens"] = num_predict
    fmt = body.get("format")
    if fmt not in (None, "", "json") and not isinstance(fmt, dict):  # as Ollama: never an unconstrained answer
        raise InvalidRequest(f'invalid format: {fmt!r}; expected "json" or a valid JSON Schema object', param="format")
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = schema_format(fmt)
    think = body.get("think")
    if isinstance(think, str):
        out["reasoning_effort"] = think
    elif isinstance(think, bool) and "prompt" not in out:
        # Qwen3-style chat templates switch thinking with this flag (vLLM, llama.cpp's server take it).
        out["chat_template_kwargs"] = {"enable_thinking": think}
    if body.get("logprobs") and "prompt" not in out:
        out["logprobs"] = True
        if body.get("top_logprobs"):
            out["top_logprobs"] = body["top_logprobs"]
    return out


def _typed_option(key: str, value: Any) -> float | int:
    """An option's value as Ollama's Options.FromMap takes it: a float32 option any JSON number, an integer one any
    number truncated. Anything else is its error, here a 400: sent on, the upstream refused it in its own words
    (llama-cpp-python's 500 with a pydantic dump and a file path), or took a string for a number."""
    if not _finite_number(value):
        kind = "integer" if key in _INTEGER_OPTIONS else "float32"
        raise InvalidRequest(f'option "{key}" must be of type {kind}', param=f"options.{key}")
    return int(value) if key in _INTEGER_OPTIONS else value


def _num_predict(value: Any) -> int | None:
    """`options.num_predict` as Ollama reads it (any JSON number, truncated; negative: no limit). Anything else is
    Ollama's 400: dropped, it would leave the answer unbounded, up to the upstream's whole context."""
    if value is None:
        return None
    if not _finite_number(value):
        raise InvalidRequest('option "num_predict" must be of type integer', param="options.num_predict")
    return int(value)


def _finite_number(value: Any) -> bool:
    """A JSON number a float64 holds, as Ollama decodes one: no bool, NaN or infinity, nor an integer past float64
    (10**400, which Ollama's decoder refuses and math.isfinite cannot convert: an OverflowError, a 500)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _messages(messages: list[Any]) -> list[dict[str, Any]]:
    ids_by_name: dict[str, str] = {}
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest("each message must be an object", param="messages")
        role = str(message.get("role") or "").lower()
        converted: dict[str, Any] = {"role": role, "content": message.get("content") or ""}
        if message.get("images"):
            parts: list[dict[str, Any]] = [{"type": "text", "text": converted["content"]}] if converted["content"] else []
            parts += [{"type": "image_url", "image_url": {"url": _data_url(image, f"messages[{i}].images[{j}]")}}
                      for j, image in enumerate(_images(message["images"]))]
            converted["content"] = parts
        calls = message_tool_calls(message)
        if calls:
            converted["tool_calls"] = [_tool_call(c, ids_by_name) for c in calls]
        if role == "tool":
            name = message.get("tool_name") or message.get("name")
            if name:
                converted["name"] = name
            call_id = message.get("tool_call_id") or ids_by_name.get(name or "")
            if call_id:
                converted["tool_call_id"] = call_id
        out.append(converted)
    return out


def _tool_call(call: dict[str, Any], ids_by_name: dict[str, str]) -> dict[str, Any]:
    function = call.get("function") or {}
    call_id = call.get("id") or f"call_{secrets.token_hex(4)}"
    ids_by_name[function.get("name") or ""] = call_id
    arguments = function.get("arguments")
    return {"id": call_id, "type": "function",
            "function": {"name": function.get("name"),
                         "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments or {})}}


def _images(images: Any) -> list[str]:
    """A message's images as Ollama takes them: an array of base64 strings (else Ollama's 400, not a crash)."""
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise InvalidRequest("images must be an array of base64-encoded strings", param="images")
    return images


def _data_url(image: str, param: str) -> str:
    """A base64 image as a data URL for the upstream; an image that is no base64 is a 400, as Ollama's JSON
    binding of []byte refuses it (it was a 500 from the MIME sniffing)."""
    try:
        base64.b64decode(image, validate=True)
    except binascii.Error as exc:
        raise InvalidRequest(f"{param} is not base64 image data: {exc}", param=param) from None
    head = base64.b64decode(image[:32] + "=" * (-len(image[:32]) % 4), validate=False)
    mime = ("image/png" if head.startswith(b"\x89PNG") else "image/gif" if head.startswith(b"GIF8")
            else "image/webp" if head[8:12] == b"WEBP" else "image/jpeg")
    return f"data:{mime};base64,{image}"


# --- answers ----------------------------------------------------------------------------------


def _done_reason(finish: str | None) -> str:
    return "length" if finish == "length" else "stop"


def _tool_calls_in(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, call in enumerate(calls):
        function = call.get("function") or {}
        arguments = function.get("arguments") or "{}"
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            # Ollama's clients require an object: keep the text rather than drop the call.
            parsed = {RAW_ARGUMENTS: arguments}
        out.append({"id": call.get("id") or f"call_{secrets.token_hex(4)}",
                    "function": {"index": i, "name": function.get("name"), "arguments": parsed}})
    return out


class NdjsonAnswer:
    """OpenAI chunks (or one whole answer) → Ollama /api/chat or /api/generate objects."""

    def __init__(self, model: str, endpoint: str) -> None:
        self.model = model
        self.chat = endpoint == "chat"
        self.started = time.perf_counter_ns()
        self.first_token_at: int | None = None
        self.finish: str | None = None
        self.usage: dict[str, Any] = {}
        self.timings: dict[str, Any] = {}  # llama.cpp's server: its own prompt / generation times (ms)
        # The prompt's tokens counted otherwise, where the upstream sent no usage (prompt_tokens.py).
        self.counted_prompt_tokens: int | None = None
        # Servers that send no usage in streams (llama-cpp-python) send one chunk per token.
        self.num_token_chunks = 0
        self._calls: dict[int, dict[str, Any]] = {}

    def _line(self, text: str = "", thinking: str = "", done: bool = False,
              calls: list[dict[str, Any]] | None = None, logprobs: list[Any] | None = None) -> dict[str, Any]:
        obj = ollama_answer(self.model, self.chat, text, thinking, calls)
        obj["done"] = done
        if logprobs:
            obj["logprobs"] = logprobs
        return obj

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """One OpenAI stream chunk → zero or more Ollama objects (never the final one)."""
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        if isinstance(chunk.get("timings"), dict):
            self.timings = chunk["timings"]
        out = []
        for choice in chunk.get("choices") or []:
            self.finish = choice.get("finish_reason") or self.finish
            delta = choice.get("delta") or {}
            if "content" in delta or "text" in choice or delta.get("tool_calls"):
                self.num_token_chunks += 1
            text = delta.get("content") or choice.get("text") or ""
            thinking = delta.get("reasoning_content") or delta.get("reasoning") or ""
            for call in delta.get("tool_calls") or []:
                self._merge_call(call)
            logprobs = _logprobs_in(choice.get("logprobs"))
            if text or thinking or logprobs:
                if self.first_token_at is None:
                    self.first_token_at = time.perf_counter_ns()
                out.append(self._line(text, thinking, logprobs=logprobs))
        return out

    def _merge_call(self, call: dict[str, Any]) -> None:
        slot = self._calls.setdefault(int(call.get("index") or 0), {"id": None, "function": {"name": "", "arguments": ""}})
        slot["id"] = call.get("id") or slot["id"]
        function = call.get("function") or {}
        slot["function"]["name"] += function.get("name") or ""
        slot["function"]["arguments"] += function.get("arguments") or ""

    def final(self, text: str = "", thinking: str = "", end: int | None = None) -> dict[str, Any]:
        """The done:true object with Ollama's metrics (durations in ns, up to `end`, a perf_counter_ns time:
        by default now); a whole answer carries its text and thinking in it."""
        calls = _tool_calls_in([self._calls[i] for i in sorted(self._calls)])
        obj = self._line(text, thinking, done=True, calls=calls or None)
        end = time.perf_counter_ns() if end is None else end
        eval_count = int(self.usage.get("completion_tokens") or self.num_token_chunks)
        prompt_duration, eval_duration = self._durations(end, eval_count)
        obj.update(done_reason=_done_reason(self.finish), total_duration=end - self.started, load_duration=0)
        prompt_tokens = self.usage.get("prompt_tokens")
        prompt_tokens = self.counted_prompt_tokens if prompt_tokens is None else prompt_tokens
        if prompt_tokens is not None:  # unknown (no usage, nothing counted): left out, not a claimed 0
            obj["prompt_eval_count"] = int(prompt_tokens)
        if prompt_duration > 0:
            obj["prompt_eval_duration"] = prompt_duration
        obj.update(eval_count=eval_count, eval_duration=eval_duration)
        return obj

    def _durations(self, end: int, eval_count: int) -> tuple[int, int]:
        """(prompt_eval_duration, eval_duration), as truthful as the upstream lets them be: its own timings
        (llama.cpp's server); else split at the first token this proxy saw (a stream); else, a whole answer
        that arrived at once, all of the request's time is the generation's and the prompt's share is unknown:
        0, left out (as Ollama leaves out a zero). Never an eval_duration of 0 beside tokens: clients divide
        eval_count by it (`ollama run --verbose`, tokens/s)."""
        prompt_ms, predicted_ms = self.timings.get("prompt_ms"), self.timings.get("predicted_ms")
        if _is_ms(prompt_ms) and _is_ms(predicted_ms):
            prompt, generation = int(prompt_ms * 1e6), int(predicted_ms * 1e6)
        elif self.first_token_at is not None:
            prompt, generation = self.first_token_at - self.started, end - self.first_token_at
        else:
            prompt, generation = 0, end - self.started
        return prompt, max(generation, 1) if eval_count > 0 else generation

    def whole(self, answer: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed OpenAI answer → one Ollama object."""
        self.usage = answer.get("usage") or {}
        if isinstance(answer.get("timings"), dict):
            self.timings = answer["timings"]
        choice = (answer.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        self.finish = choice.get("finish_reason")
        for i, call in enumerate(message.get("tool_calls") or []):
            self._calls[i] = call
        text = message.get("content") or choice.get("text") or ""
        thinking = message.get("reasoning_content") or message.get("reasoning") or ""
        obj = self.final(text, thinking)
        logprobs = _logprobs_in(choice.get("logprobs"))
        if logprobs:
            obj["logprobs"] = logprobs
        return obj


def _is_ms(value: Any) -> bool:
    return _finite_number(value) and value >= 0


def _logprobs_in(logprobs: Any) -> list[dict[str, Any]] | None:
    if not isinstance(logprobs, dict):
        return None
    if isinstance(logprobs.get("content"), list):
        return logprobs["content"] or None
    tokens = logprobs.get("tokens") or []
    values = logprobs.get("token_logprobs") or []
    tops = logprobs.get("top_logprobs") or [None] * len(tokens)
    return [{"token": t, "logprob": v,
             "top_logprobs": [{"token": k, "logprob": p} for k, p in (top or {}).items()]}
            for t, v, top in zip(tokens, values, tops)] or None
