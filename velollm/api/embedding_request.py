"""Embedding request bodies: OpenAI /v1/embeddings, Ollama /api/embed and the legacy /api/embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from velollm.errors import InvalidRequest
from velollm.request_fields import Fields
from velollm.wire.embedding_base64 import ENCODING_FORMATS
from velollm.wire.keep_alive import keep_alive_seconds

MAX_INPUTS = 2048  # OpenAI's limit on the items of one request


@dataclass(frozen=True)
class EmbedRequest:
    """Exactly one of `texts` / `token_ids` is set (both may be empty: a load-only Ollama request)."""

    texts: list[str] | None = None
    token_ids: list[list[int]] | None = None
    truncate: bool = True
    dimensions: int | None = None
    encoding_format: str = "float"
    keep_last: int | None = None  # vLLM's truncate_prompt_tokens: each input's last k ids (-1: the model's length)
    add_special_tokens: bool = True  # vLLM's: a text's special tokens (CLS/SEP, BOS/EOS)

    @property
    def num_inputs(self) -> int:
        return len(self.texts if self.texts is not None else self.token_ids or [])


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _openai_input(value: Any) -> EmbedRequest:
    bad = InvalidRequest("input must be a non-empty string, an array of non-empty strings, an array of token ids "
                         "or an array of token-id arrays", param="input")
    if isinstance(value, str):
        if not value:
            raise bad
        return EmbedRequest(texts=[value])
    if not isinstance(value, list) or not value:
        raise bad
    if len(value) > MAX_INPUTS:
        raise InvalidRequest(f"input holds {len(value)} items; at most {MAX_INPUTS} are allowed", param="input")
    if all(isinstance(v, str) and v for v in value):
        return EmbedRequest(texts=list(value))
    if all(_is_int(v) for v in value):
        return EmbedRequest(token_ids=[list(value)])
    if all(isinstance(v, list) and v and all(_is_int(t) for t in v) for v in value):
        return EmbedRequest(token_ids=[list(v) for v in value])
    raise bad


def parse_openai(body: dict[str, Any]) -> EmbedRequest:
    """An over-long input is an error, as on OpenAI (no silent truncation), unless vLLM's truncate_prompt_tokens
    asks for its last ids."""
    f = Fields(body)
    if not f.has("input"):
        raise InvalidRequest("input is required", param="input")
    req = _openai_input(f.raw("input"))
    fmt = f.str("encoding_format", "float") or "float"
    if fmt not in ENCODING_FORMATS:
        raise f.bad("encoding_format", f"must be one of {list(ENCODING_FORMATS)}")
    f.str("user", None)
    dimensions = f.int("dimensions", None, lo=1)
    keep_last = f.int("truncate_prompt_tokens", None, lo=-1)
    if keep_last == 0:
        raise f.bad("truncate_prompt_tokens", "must be -1 or at least 1")
    return EmbedRequest(req.texts, req.token_ids, truncate=False, dimensions=dimensions, encoding_format=fmt,
                        keep_last=keep_last, add_special_tokens=f.bool("add_special_tokens", True))


def parse_ollama_embed(body: dict[str, Any]) -> EmbedRequest:
    """/api/embed: `input` a string or a list of strings (empty: load the model only)."""
    f = Fields(body)
    texts = f.str_list("input", [])
    if texts == [""]:  # as in Ollama: an empty input only loads the model
        texts = []
    if not all(texts):
        raise f.bad("input", "must not contain empty strings")
    _check_ollama_extras(f)
    return EmbedRequest(texts=texts, truncate=f.bool("truncate", True), dimensions=f.int("dimensions", None, lo=1))


def parse_ollama_legacy(body: dict[str, Any]) -> EmbedRequest:
    """/api/embeddings: one `prompt` (empty: load the model only, answered with an empty vector)."""
    f = Fields(body)
    prompt = f.str("prompt", "") or ""
    _check_ollama_extras(f)
    return EmbedRequest(texts=[prompt] if prompt else [], truncate=True)


def _check_ollama_extras(f: Fields) -> None:
    """`options` must be an object and `keep_alive` a duration, as on /api/chat: a pinned model never reads
    keep_alive (only on-demand ones parse it when routed), so a bad one would pass unnoticed."""
    f.dict("options", None)
    keep_alive_seconds(f.raw("keep_alive"), default=None)
