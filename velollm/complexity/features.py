"""RequestFeatures: what the routing policy reads of a request body, in any of the five wire formats.

The body has not been validated yet (routing comes first, velollm/api/registry.py), so extraction
never raises: a field of the wrong type counts as absent, and the chosen model's parser reports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from velollm.complexity.signals import code_score, estimate_tokens, math_score

# request path -> how its body is read
APIS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completion",
    "/v1/responses": "responses",
    "/v1/responses/input_tokens": "responses",  # a count picks the model its create would
    "/v1/responses/compact": "responses",  # so does a compaction: the summary is the model's
    "/api/chat": "ollama_chat",
    "/api/generate": "ollama_generate",
}
FORMATS = ("text", "json", "json_schema")
_NO_REASONING = (None, False, "none", "minimal", "")


@dataclass(frozen=True)
class RequestFeatures:
    """`text`: every text of the prompt (system, messages, prompt), one per line; `query`: the last user
    message (or the prompt), what the kNN embeds; `num_turns`: user messages; `format`: text, json
    (any JSON) or json_schema; `reasoning`: the client asked for thinking / a reasoning effort."""

    text: str = ""
    query: str = ""
    num_chars: int = 0
    num_tokens: int = 0
    num_turns: int = 0
    num_messages: int = 0
    has_tools: bool = False
    has_images: bool = False
    code_score: int = 0
    math_score: int = 0
    format: str = "text"
    reasoning: bool = False


def extract(body: dict[str, Any], path: str) -> RequestFeatures:
    """The features of `body` sent to `path` (one of APIS; another path reads like a chat)."""
    api = APIS.get(path, "chat")
    messages, has_images = _messages(body, api)
    system = _system(body, api)
    texts = ([system] if system else []) + [text for _, text in messages]
    text = "\n".join(t for t in texts if t)
    user = [t for role, t in messages if role == "user"]
    return RequestFeatures(
        text=text, query=user[-1] if user else (messages[-1][1] if messages else system),
        num_chars=len(text), num_tokens=estimate_tokens(text), num_turns=len(user), num_messages=len(messages),
        has_tools=_is_nonempty_list(body.get("tools")) or _is_nonempty_list(body.get("functions")),
        has_images=has_images, code_score=code_score(text), math_score=math_score(text),
        format=_format(body, api), reasoning=_reasoning(body, api))


def _is_nonempty_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0


def _system(body: dict[str, Any], api: str) -> str:
    key = {"responses": "instructions", "ollama_generate": "system"}.get(api)
    value = body.get(key) if key else None
    return value if isinstance(value, str) else ""


def _messages(body: dict[str, Any], api: str) -> tuple[list[tuple[str, str]], bool]:
    """(role, text) of each message, and whether any image came with them."""
    if api in ("completion", "ollama_generate"):
        prompt = body.get("prompt")
        prompts = prompt if isinstance(prompt, list) else [prompt]
        texts = [p for p in prompts if isinstance(p, str)]
        return [("user", "\n".join(texts))] if texts else [], _is_nonempty_list(body.get("images"))
    items = body.get("input" if api == "responses" else "messages")
    if isinstance(items, str):  # the Responses API's plain-text input
        return [("user", items)], False
    out, has_images = [], False
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        text, images = _content(item.get("content"))
        if item.get("type") == "function_call_output":
            text = str(item.get("output") or "")
        has_images = has_images or images or _is_nonempty_list(item.get("images"))
        role = item.get("role")
        out.append((role if isinstance(role, str) else "tool", text))
    return out, has_images


def _content(content: Any) -> tuple[str, bool]:
    """A message's text (the text parts of a list, joined) and whether it holds an image part."""
    if isinstance(content, str):
        return content, False
    texts, images = [], False
    for part in content if isinstance(content, list) else []:
        if isinstance(part, dict):
            kind = part.get("type")
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            images = images or kind in ("image_url", "input_image", "image")
    return "\n".join(texts), images


def _format(body: dict[str, Any], api: str) -> str:
    if api.startswith("ollama"):
        value = body.get("format")
        return "json_schema" if isinstance(value, dict) else "json" if value == "json" else "text"
    spec = body.get("response_format")
    if api == "responses":
        text = body.get("text")
        spec = text.get("format") if isinstance(text, dict) else None
    kind = spec.get("type") if isinstance(spec, dict) else None
    return {"json_object": "json", "json_schema": "json_schema"}.get(kind, "text") if isinstance(kind, str) else "text"


def _reasoning(body: dict[str, Any], api: str) -> bool:
    if api.startswith("ollama"):
        return body.get("think") not in _NO_REASONING
    effort = body.get("reasoning_effort")
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict):  # Responses API: {"effort": ...}
        effort = reasoning.get("effort", "medium")
    kwargs = body.get("chat_template_kwargs")
    thinking = isinstance(kwargs, dict) and kwargs.get("enable_thinking") is True
    return thinking or (isinstance(effort, str) and effort not in _NO_REASONING)
