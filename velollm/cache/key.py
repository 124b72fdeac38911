"""CacheKey: what identifies an answer. The exact key hashes everything that shapes it; the context key
hashes the same minus the question (the last user message, or the prompt), which the semantic tier
matches by meaning only among entries of one context. A Responses request (`/v1/responses`) is keyed
over its canonical form: a text `input` is the one user message item it stands for, a message's text
parts are its text, and the question is the last input item when it is the user's text.

Both keys also hash the model's identity when the server knows one (velollm/api/model_identity.py: the
Ollama manifest digest, the weights file's identity, an Ollama upstream's listed digest), so that a name
that comes to point at another model (`ollama cp y x`, a delete and create, a pull of a newer version)
never answers with the old model's entries; without one (an OpenAI-compatible upstream) the name is the key.

An exact key begins with tags of the model name and of its identity, `<model tag>.<identity tag>.<digest>`, so
that every store can find a model's entries of other identities by their keys alone (entry_prefixes), and delete
them once the name stands for another model (velollm/cache/stale_purge.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

# Endpoint paths -> the kind of answer they give (the kind is part of every key).
ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completion",
             "/api/chat": "ollama_chat", "/api/generate": "ollama_generate", "/v1/responses": "responses"}

# Fields that never change the answer: how it is delivered, who asked, how long the model stays loaded.
_DELIVERY_FIELDS = frozenset({"stream", "stream_options", "user", "keep_alive", "cache", "metadata", "store",
                              "service_tier", "request_id", "safety_identifier", "prompt_cache_key"})
# Ollama options that tune the runtime, not the tokens.
_RUNTIME_OPTIONS = frozenset({"num_thread", "num_gpu", "main_gpu", "use_mmap", "use_mlock", "low_vram", "numa",
                              "num_batch"})


@dataclass(frozen=True)
class CacheKey:
    """`exact`/`context`: hex digests. `query`: the question the semantic tier may match by meaning
    (None when the request has no plain-text question last, e.g. a tool result or an image)."""

    kind: str
    model: str
    exact: str
    context: str
    query: str | None
    identity: str = ""  # what `model` stood for when the key was made ("" when only the name was known)


TAG_HEX = 16  # hex digits of a model's and an identity's tag in an exact key


def _tag(kind: str, text: str) -> str:
    return hashlib.sha256(f"{kind}\0{text}".encode()).hexdigest()[:TAG_HEX]


def entry_prefixes(model: str, identity: str) -> tuple[str, str]:
    """(how every exact key of `model`'s entries begins, how those made under `identity` begin)."""
    prefix = _tag("model", model) + "."
    return prefix, prefix + _tag("identity", identity) + "."


def _digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def tenant_of(authorization: str | None) -> str:
    """A short digest of the caller's credentials: entries never cross API keys."""
    return hashlib.sha256((authorization or "").encode()).hexdigest()[:16]


def _text_of(content: Any, types: tuple[str, ...] = ("text",), sep: str = "\n") -> str | None:
    """Plain text of a message's content (its `types` parts joined by `sep`); None when it holds anything else."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") in types]
        if len(texts) == len(content) and all(isinstance(t, str) for t in texts):
            return sep.join(texts)
    return None


def _split_messages(body: dict[str, Any]) -> tuple[Any, str | None]:
    """(context part, question) of a chat body: the question is the last message when it is the user's."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return messages, None
    last = messages[-1]
    if last.get("role") != "user" or last.get("images"):
        return messages, None
    query = _text_of(last.get("content"))
    if query is None:
        return messages, None
    rest = {k: v for k, v in last.items() if k != "content"}
    return [*messages[:-1], rest], query


RESPONSE_TEXT_PARTS = ("input_text", "output_text", "text")


def _response_items(value: Any) -> Any:
    """A Responses `input` in canonical form: a list of items, each message's text as one string."""
    items = [{"type": "message", "role": "user", "content": value}] if isinstance(value, str) else value
    if not isinstance(items, list):
        return items
    out = []
    for item in items:
        if isinstance(item, dict) and item.get("type", "message") == "message":
            text = _text_of(item.get("content"), RESPONSE_TEXT_PARTS, "")  # parts joined as the model reads them
            item = {**item, "type": "message", **({"content": text} if text is not None else {})}
        out.append(_given(item) if isinstance(item, dict) else item)
    return out


def _split_items(fields: dict[str, Any]) -> tuple[Any, str | None]:
    """(context part, question) of a Responses body: the question is the last item when it is user text."""
    items = fields.get("input")
    if not isinstance(items, list) or not items or not isinstance(items[-1], dict):
        return items, None
    last = items[-1]
    if last.get("type") != "message" or last.get("role") != "user" or not isinstance(last.get("content"), str):
        return items, None
    return [*items[:-1], {k: v for k, v in last.items() if k != "content"}], last["content"]


def _split_prompt(body: dict[str, Any]) -> tuple[Any, str | None]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str) and not body.get("images") and not body.get("suffix"):
        return None, prompt
    return prompt, None


def _given(obj: dict[str, Any], skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The fields a client actually set: null and empty lists/objects mean "not given" (the ollama
    client sends `"tools": []`, LangChain `"stop": null`)."""
    return {k: v for k, v in obj.items() if k not in skip and v is not None and v != [] and v != {}}


def _shaping_fields(body: dict[str, Any]) -> dict[str, Any]:
    out = _given(body, _DELIVERY_FIELDS)
    options = out.get("options")
    if isinstance(options, dict):
        out["options"] = _given(options, _RUNTIME_OPTIONS)
    messages = out.get("messages")
    if isinstance(messages, list):
        out["messages"] = [_given(m) if isinstance(m, dict) else m for m in messages]
    return out


def cache_key(path: str, body: dict[str, Any], tenant: str, namespace: str | None = None,
              identity: str = "") -> CacheKey:
    """The key of a request to one of ENDPOINTS (body already parsed as a JSON object). `identity`: what
    the body's model name stands for now ("" when only the name is known)."""
    kind = ENDPOINTS[path]
    fields = _shaping_fields(body)
    if kind == "responses" and "input" in fields:
        fields["input"] = _response_items(fields["input"])
    scope: dict[str, Any] = {"kind": kind, "tenant": tenant, "namespace": namespace}
    if identity:  # absent, not empty, when unknown: name-only keys stay what they were
        scope["model_identity"] = identity
    model = str(body.get("model", ""))
    exact = entry_prefixes(model, identity)[1] + _digest({**scope, "body": fields})
    if kind in ("chat", "ollama_chat"):
        context_part, query = _split_messages(fields)
        rest = {k: v for k, v in fields.items() if k != "messages"}
        context = _digest({**scope, "body": rest, "messages": context_part})
    elif kind == "responses":
        context_part, query = _split_items(fields)
        rest = {k: v for k, v in fields.items() if k != "input"}
        context = _digest({**scope, "body": rest, "input": context_part})
    else:
        context_part, query = _split_prompt(fields)
        rest = {k: v for k, v in fields.items() if k != "prompt"}
        context = _digest({**scope, "body": rest, "prompt": context_part})
    if query is not None and not query.strip():
        query = None
    return CacheKey(kind=kind, model=model, exact=exact, context=context, query=query, identity=identity)
