"""The numeric fields of an OpenAI request, read for an Ollama upstream by the reader a native model's route uses
(request_fields.Fields: the same types, ranges and 400s). Ollama takes its options as given and refuses a wrong type
with a 500 (`option "temperature" must be of type float32`), reads num_predict 0 or -1 as no limit, and cannot
decode a number past float64's range (its JSON error, naming no field)."""

from __future__ import annotations

from typing import Any

from velollm.request_fields import Fields
from velollm.sampling_params import SEED_MAX, SEED_MIN

# A limit past any context (max_tokens) or vocabulary (top_k) is no limit: sent as this much, which Ollama's int
# options hold, rather than as an integer Ollama cannot decode (10**400) or one its float64 reading wraps (2**63).
OLLAMA_LIMIT_MAX = 2**31 - 1


def sampling_number(body: dict[str, Any], key: str) -> int | float:
    """A sampling field, of the type a native model's route takes (its 400 in the same words): sent on as it came,
    Ollama refused it as an option (`option "temperature" must be of type float32`, a 500)."""
    f = Fields(body)
    if key == "seed":
        return f.int(key, lo=SEED_MIN, hi=SEED_MAX)
    if key == "top_k":
        return max(-1, min(f.int(key), OLLAMA_LIMIT_MAX))  # Ollama reads any top_k below 1 as off
    return f.float(key)


def max_tokens_field(body: dict[str, Any]) -> int | None:
    """max_completion_tokens (else max_tokens), an integer of at least 1 as OpenAI wants: 0 or a negative one
    would reach Ollama as num_predict 0 / -1, which is no limit at all (an answer to the end of the context)."""
    f = Fields(body)
    key = "max_completion_tokens" if f.has("max_completion_tokens") else "max_tokens"
    value = f.int(key, None, lo=1)
    return None if value is None else min(value, OLLAMA_LIMIT_MAX)
