"""The numeric fields of an OpenAI request, read for an Ollama upstream as a native model's route reads them: Ollama
takes its options as given and refuses a wrong type with a 500 (`option "temperature" must be of type float32`),
and reads num_predict 0 or -1 as no limit. (api/fields.Fields reads the same for the native route; the proxy
imports nothing of velollm.api.)"""

from __future__ import annotations

from typing import Any

from velollm.errors import InvalidRequest

_INTEGER_FIELDS = frozenset({"seed", "top_k"})


def sampling_number(body: dict[str, Any], key: str) -> int | float:
    """A sampling field, of the type a native model's route takes (its 400 in the same words): sent on as it came,
    Ollama refused it as an option (`option "temperature" must be of type float32`, a 500)."""
    value = body[key]
    if key in _INTEGER_FIELDS:
        if isinstance(value, float) and value.is_integer():  # 2.0: an integer, as the native route takes it
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            got = repr(value) if isinstance(value, float) else type(value).__name__
            raise InvalidRequest(f"{key} must be an integer, got {got}", param=key)
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"{key} must be a number, got {type(value).__name__}", param=key)
    return value


def max_tokens_field(body: dict[str, Any]) -> int | None:
    """max_completion_tokens (else max_tokens), an integer of at least 1 as OpenAI wants: 0 or a negative one
    would reach Ollama as num_predict 0 / -1, which is no limit at all (an answer to the end of the context)."""
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise InvalidRequest(f"{key} must be an integer, got {value!r}", param=key)
    if value < 1:
        raise InvalidRequest(f"{key} must be at least 1, got {value!r}", param=key)
    return int(value)
