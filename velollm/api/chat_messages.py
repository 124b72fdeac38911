"""OpenAI chat messages -> the plain dicts a Hugging Face chat template expects."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from velollm.errors import InvalidRequest
from velollm.request_fields import Fields
from velollm.wire.json_body import parse_json

T = TypeVar("T")

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


def text_of(content: Any, param: str) -> str | None:
    """String content, or the text (and refusal) parts of an array joined by newlines (as vLLM does)."""
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"{param} must be a string or an array of content parts", param=param)
    texts = []
    for i, part in enumerate(content):
        p = Fields(part, f"{param}[{i}].")
        kind = p.str("type")
        if kind == "refusal":  # an assistant turn's refusal, replayed as history: what it said
            texts.append(p.str("refusal"))
            continue
        if kind not in ("text", "input_text"):
            raise InvalidRequest(f"{param}[{i}].type {kind!r} is not supported: this server takes text only",
                                 param=f"{param}[{i}].type")
        texts.append(p.str("text"))
    return "\n".join(texts)


def _tool_calls(calls: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise InvalidRequest(f"{param} must be an array", param=param)
    out = []
    for j, call in enumerate(calls):
        c = Fields(call, f"{param}[{j}].")
        fn = Fields(c.dict("function"), f"{param}[{j}].function.")
        args = fn.raw("arguments", {})
        if isinstance(args, str):
            # Templates render arguments with `tojson`; a JSON string would be encoded twice.
            args = parse_json(args, fn.name("arguments"), fn.name("arguments")) if args.strip() else {}
        out.append({**call, "type": c.str("type", "function"),
                    "function": {"name": fn.str("name"), "arguments": args}})
    return out


def normalize_messages(raw: Any, param: str = "messages") -> list[dict[str, Any]]:
    """Validates OpenAI messages; keeps the keys templates use (name, tool_calls, tool_call_id, ...)."""
    if not isinstance(raw, list):
        raise InvalidRequest(f"{param} is required and must be an array", param=param)
    if not raw:
        raise InvalidRequest(f"{param} must not be empty", param=param)
    messages = []
    for i, message in enumerate(raw):
        m = Fields(message, f"{param}[{i}].")
        role = m.str("role")
        if role not in ROLES:
            raise InvalidRequest(f"{m.name('role')} must be one of {sorted(ROLES)}, got {role!r}",
                                 param=m.name("role"))
        out = dict(message)
        out["content"] = text_of(message.get("content"), m.name("content"))
        if out["content"] is None and role != "assistant":
            raise InvalidRequest(f"{m.name('content')} is required for role {role!r}", param=m.name("content"))
        if message.get("tool_calls") is not None:
            out["tool_calls"] = _tool_calls(message["tool_calls"], m.name("tool_calls"))
        if out["content"] is None:
            out["content"] = ""
        messages.append(out)
    return messages


def developer_as_system(messages: list[dict[str, Any]], chat_template: Any) -> list[dict[str, Any]]:
    """OpenAI's `developer` messages (what newer clients send for system instructions) as `system` ones,
    unless the model's template names a developer role: most templates know none and raise on it or
    drop it. /v1/responses maps it so too (velollm/responses/items.py)."""
    templates = chat_template.values() if isinstance(chat_template, Mapping) else [chat_template or ""]
    if any("developer" in str(t) for t in templates):
        return messages
    return [{**m, "role": "system"} if m.get("role") == "developer" else m for m in messages]


def with_model_preamble(messages: list[dict[str, Any]], system: str | None,
                        history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """An Ollama model's own turns put before the request's, as Ollama's chat handler puts them (on /api/chat
    and /v1 alike): its MESSAGE history first, and its SYSTEM prompt before everything when the request does
    not open with a system message of its own."""
    out = [*history, *messages]
    if system and (not messages or messages[0].get("role") != "system"):
        out = [{"role": "system", "content": system}, *out]
    return out


def continue_final(text: str, messages: Sequence[Mapping[str, Any]]) -> str:
    """The chat rendered without a generation prompt, cut right after the final message's content, so
    that the model goes on writing that (assistant) message: vLLM's and transformers'
    `continue_final_message` (assistant prefill)."""
    final = str(messages[-1].get("content") or "")
    for probe in (final, final.strip()):  # templates may trim the content
        at = text.rfind(probe) if probe else -1
        if at >= 0:
            return text[:at + len(probe)]
    raise InvalidRequest("continue_final_message: the chat template does not render the final message's "
                         "content, so it cannot be continued", param="messages")


def apply_template(render: Callable[..., T], messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> T:
    """`render(messages, **kwargs)` (a tokenizer's chat template, a ToolSession's prompt) with the model's
    template errors ("roles must alternate", ...) as a 400 naming `messages`."""
    try:
        return render(messages, **kwargs)
    except InvalidRequest:  # ContextOverflow included
        raise
    except Exception as exc:  # jinja errors from the model's template
        raise InvalidRequest(f"the chat template could not render these messages: {exc}", param="messages") from exc
