"""Responses items <-> chat messages: what the model reads, and what it answered, in both shapes."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from velollm.errors import InvalidRequest
from velollm.responses.compaction import compaction_message

_ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
_TEXT_PARTS = ("input_text", "output_text", "text")


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _text(content: Any, where: str) -> str:
    """A message's content: a string, or text parts (joined)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"Invalid '{where}.content': expected a string or an array of content parts",
                             param=f"{where}.content")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS:
            texts.append(str(part.get("text", "")))
        elif kind == "refusal":
            texts.append(str(part.get("refusal", "")))
        else:
            raise InvalidRequest(f"Invalid '{where}.content[{j}]': content of type {kind!r} is not supported "
                                 "(text only)", param=f"{where}.content[{j}]")
    return "".join(texts)


def _reasoning_text(item: Mapping[str, Any], where: str) -> str:
    key = "content" if item.get("content") else "summary"
    parts = item.get(key) or []
    if not isinstance(parts, list):
        raise InvalidRequest(f"Invalid '{where}.{key}': expected an array of text parts", param=f"{where}.{key}")
    text = "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))
    if not text and item.get("encrypted_content") is not None:
        return _decrypt(item["encrypted_content"], f"{where}.encrypted_content")
    return text


def encrypt_reasoning(item: Mapping[str, Any]) -> dict[str, Any]:
    """A reasoning item with `encrypted_content` (include=["reasoning.encrypted_content"]): its thinking as an
    opaque string that a stateless client (store=false) sends back in place of the text (LangChain drops
    reasoning items without it). Nothing is hidden from the client that received the thinking: base64."""
    text = "".join(str(p.get("text", "")) for p in item.get("content") or [] if isinstance(p, Mapping))
    return {**item, "encrypted_content": _ENCRYPTED_PREFIX + base64.b64encode(text.encode()).decode()}


_ENCRYPTED_PREFIX = "velollm-reasoning:"


def _decrypt(value: Any, param: str) -> str:
    if isinstance(value, str) and value.startswith(_ENCRYPTED_PREFIX):
        try:
            return base64.b64decode(value[len(_ENCRYPTED_PREFIX):], validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            pass
    raise InvalidRequest(f"Invalid '{param}': the encrypted content could not be read (it was not issued by this "
                         "server)", param=param)


def items_to_messages(items: Sequence[Mapping[str, Any]], param: str = "input") -> list[dict[str, Any]]:
    """Input items as chat messages: consecutive function calls become one assistant message with
    tool_calls, a reasoning item rides on the assistant message after it (reasoning_content)."""
    messages: list[dict[str, Any]] = []
    reasoning: str | None = None

    def assistant() -> dict[str, Any]:
        nonlocal reasoning
        last = messages[-1] if messages else None
        if last is None or last["role"] != "assistant" or reasoning is not None:  # reasoning opens a turn
            last = {"role": "assistant", "content": None}
            messages.append(last)
        if reasoning is not None:
            last["reasoning_content"], reasoning = reasoning, None
        return last

    for i, item in enumerate(items):
        where = f"{param}[{i}]"
        kind = item.get("type", "message")
        if kind == "message":
            given = item.get("role")
            role = _ROLES.get(given) if isinstance(given, str) else None
            if role is None:
                raise InvalidRequest(f"Invalid '{where}.role': expected one of {sorted(_ROLES)}", param=f"{where}.role")
            text = _text(item.get("content"), where)
            if role == "assistant":
                msg = assistant()
                msg["content"] = (msg["content"] or "") + text
            else:
                messages.append({"role": role, "content": text})
        elif kind == "function_call":
            msg = assistant()
            msg.setdefault("tool_calls", []).append({
                "id": _field(item, "call_id", where), "type": "function",
                "function": {"name": _field(item, "name", where), "arguments": _field(item, "arguments", where)}})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _text(output, where)
            messages.append({"role": "tool", "tool_call_id": _field(item, "call_id", where), "content": text})
        elif kind == "reasoning":
            reasoning = _reasoning_text(item, where)
        elif kind == "compaction":
            messages.append(compaction_message(item, where))
        else:
            raise InvalidRequest(f"Invalid '{where}.type': items of type {kind!r} are not supported",
                                 param=f"{where}.type")
    return messages


def _field(item: Mapping[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str):
        raise InvalidRequest(f"Missing or invalid '{where}.{name}': expected a string", param=f"{where}.{name}")
    return value


def reasoning_item(text: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "reasoning", "id": new_id("rs"), "summary": [],
            "content": [{"type": "reasoning_text", "text": text}], "status": status}


def message_item(text: str, status: str = "completed", logprobs: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    return {"type": "message", "id": new_id("msg"), "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": list(logprobs)}]}


def _logprob(entry: Mapping[str, Any]) -> dict[str, Any]:
    token = str(entry.get("token", ""))
    raw = entry.get("bytes")
    return {"token": token, "bytes": list(raw) if raw is not None else list(token.encode()),
            "logprob": float(entry.get("logprob", 0.0))}


def text_logprobs(chat_logprobs: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """A chat choice's `logprobs` (`{"content": [...]}`) as output_text logprobs: token, bytes, logprob and
    the `top_logprobs` alternatives, as chat has them."""
    entries = (chat_logprobs or {}).get("content") or []
    return [{**_logprob(e), "top_logprobs": [_logprob(t) for t in e.get("top_logprobs") or []]} for e in entries]


def function_call_item(call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": new_id("fc"), "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


def output_items(message: Mapping[str, Any], cut: bool = False,
                 logprobs: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """A chat completion's message as output items: reasoning, then text (with `logprobs`, from
    text_logprobs), then function calls. When max_output_tokens `cut` the answer, the last item is the one
    cut (`incomplete`); those before it were finished (a thinking closed before the text began)."""
    items = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        items.append(reasoning_item(reasoning))
    if message.get("content"):
        items.append(message_item(message["content"], logprobs=logprobs))
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        arguments = fn.get("arguments")
        if not isinstance(arguments, str):  # an Ollama-style object
            arguments = json.dumps(arguments if arguments is not None else {})
        items.append(function_call_item(call.get("id") or new_id("call"), fn.get("name", ""), arguments))
    if cut and items:
        items[-1]["status"] = "incomplete"
    return items



_ITEM_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs",
                   "compaction": "cmp"}


def input_item_objects(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A request's input items as `GET /v1/responses/{id}/input_items` lists them: each with an id and a
    status, a message's text content as typed parts (input_text; output_text for the assistant's)."""
    out = []
    for item in items:
        kind = item.get("type") or ("message" if "role" in item else "item")
        obj: dict[str, Any] = {"id": new_id(_ITEM_ID_PREFIX.get(kind, "item")), **item, "type": kind}
        obj.setdefault("status", "completed")
        if kind == "message" and isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            obj["content"] = [{"type": part, "text": item["content"]}]
        out.append(obj)
    return out
