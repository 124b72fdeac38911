"""The context-overflow modes and how a request names one."""

from __future__ import annotations

from typing import Any, Literal

from velollm.errors import InvalidRequest

OverflowMode = Literal["error", "truncate", "compress"]
MODES: tuple[str, ...] = ("error", "truncate", "compress")
# Without --context-overflow: the OpenAI API answers 400 context_length_exceeded, Ollama truncates.
API_DEFAULTS: dict[str, OverflowMode] = {"openai": "error", "ollama": "truncate"}


def parse_overflow(value: Any, param: str = "context_overflow") -> OverflowMode | None:
    """A request's mode (None when absent); anything else than the three names is a 400."""
    if value is None:
        return None
    if value not in MODES:
        raise InvalidRequest(f"{param} must be one of {list(MODES)}, got {value!r}", param=param)
    return value


def resolve_overflow(requested: OverflowMode | None, server_default: OverflowMode | None,
                     api: str) -> OverflowMode:
    """The request's mode, else the server's (--context-overflow), else the API's default."""
    return requested or server_default or API_DEFAULTS[api]
