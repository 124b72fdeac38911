"""CachePolicy: what one request asks of the cache (LiteLLM's `cache` body field, Cache-Control) and
which requests bypass it by default.

Body: `"cache": {"no-cache": true, "no-store": true, "ttl": 60, "s-maxage": 600, "namespace": "x"}` (the
openai SDK sends it through `extra_body`). Headers: `Cache-Control: no-cache, no-store, max-age=N`.
no-cache: do not answer from the cache (the new answer is still stored); no-store: do not store it;
ttl: this entry's lifetime; s-maxage / max-age: accept only entries younger than that; namespace: a
separate key space.

Bypassed by default (counted in velollm_cache_bypass_total{reason}):
- `n_sampled`: n > 1 (or best_of > 1) with sampling: the client asks for several different answers.
- `load`: an Ollama request with an empty prompt / no messages (it loads or unloads a model).
- `invalid`: a body that is not a JSON object (the endpoint answers the 400).
- `stateful`: a Responses request that continues a stored one (`previous_response_id`): its answer
  depends on a conversation the body does not hold.
- `stored`: a chat completion with `store: true`: each answer is a new stored completion (its own id,
  listed and retrievable), which a replayed answer is not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_DIRECTIVES = ("no-cache", "no-store", "ttl", "s-maxage", "namespace")


class CacheFieldError(ValueError):
    """A malformed `cache` field or Cache-Control value: a 400 naming the field."""


@dataclass(frozen=True)
class CachePolicy:
    no_cache: bool = False
    no_store: bool = False
    ttl_s: float | None = None
    max_age_s: float | None = None
    namespace: str | None = None


def _seconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise CacheFieldError(f"cache.{name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise CacheFieldError(f"cache.{name} must be true or false, got {value!r}")
    return value


def _from_header(value: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in value.lower().split(","):
        name, _, arg = part.strip().partition("=")
        if name in ("no-cache", "no-store"):
            out[name] = True
        elif name in ("max-age", "s-maxage"):
            try:
                out["s-maxage"] = float(arg)
            except ValueError as exc:
                raise CacheFieldError(f"Cache-Control {name} must be a number of seconds, got {arg!r}") from exc
    return out


def cache_policy(body: dict[str, Any], headers: Mapping[str, str]) -> CachePolicy:
    """The request's directives; the body field wins over the header where both say something."""
    field = body.get("cache", {})
    if field is None:
        field = {}
    if not isinstance(field, dict):
        raise CacheFieldError(f"cache must be an object such as {{\"no-cache\": true}}, got {type(field).__name__}")
    unknown = sorted(set(field) - set(_DIRECTIVES))
    if unknown:
        raise CacheFieldError(f"unknown cache directive(s) {unknown}; known: {list(_DIRECTIVES)}")
    merged = {**_from_header(headers.get("cache-control", "")), **field}
    namespace = merged.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise CacheFieldError(f"cache.namespace must be a string, got {namespace!r}")
    ttl = _seconds(merged["ttl"], "ttl") if "ttl" in merged else None
    return CachePolicy(
        no_cache=_flag(merged.get("no-cache", False), "no-cache"),
        no_store=_flag(merged.get("no-store", False), "no-store") or ttl == 0,  # ttl 0: keep nothing
        ttl_s=ttl or None,
        max_age_s=_seconds(merged["s-maxage"], "s-maxage") if "s-maxage" in merged else None,
        namespace=namespace,
    )


def _sampled(body: dict[str, Any], default_temperature: float) -> bool:
    options = body.get("options") if isinstance(body.get("options"), dict) else {}
    temperature = body.get("temperature", options.get("temperature", default_temperature))
    return not isinstance(temperature, (int, float)) or temperature > 0


def bypass_reason(kind: str, body: dict[str, Any]) -> str | None:
    """Why this request skips the cache by default, or None."""
    if kind == "ollama_generate" and not body.get("prompt"):
        return "load"
    if kind == "ollama_chat" and not body.get("messages"):
        return "load"
    if kind == "responses" and (body.get("previous_response_id") is not None or body.get("background")):
        return "stateful"  # (a background response is polled and cancelled: one the server runs and keeps)
    if kind == "chat" and body.get("store") is True:
        return "stored"
    many = max(_int(body.get("n")), _int(body.get("best_of")))
    if many > 1 and _sampled(body, 1.0):
        return "n_sampled"
    return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 1
