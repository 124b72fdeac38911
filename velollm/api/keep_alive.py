"""Ollama's `keep_alive`: how long a model stays loaded after its last request, parsed as Ollama does."""

from __future__ import annotations

import logging
import math
from typing import Any

from velollm.wire.keep_alive import DEFAULT_KEEP_ALIVE, InvalidKeepAlive, go_duration_seconds, keep_alive_seconds

logger = logging.getLogger(__name__)

def is_unload(keep_alive: Any) -> bool:
    """`keep_alive` 0 (`ollama stop`); an invalid value is no unload (the request's parse reports it)."""
    try:
        return keep_alive_seconds(keep_alive, default=None) == 0
    except InvalidKeepAlive:
        return False


def parse_keep_alive_env(value: str | None) -> float:
    """`$OLLAMA_KEEP_ALIVE` → seconds: a Go duration or integer seconds; unset/invalid → 5 m."""
    value = (value or "").strip().strip("'\"")
    if not value:
        return DEFAULT_KEEP_ALIVE
    try:
        seconds = float(int(value))
        return math.inf if seconds < 0 else seconds
    except ValueError:
        pass
    try:
        return go_duration_seconds(value)
    except InvalidKeepAlive:
        logger.warning("invalid OLLAMA_KEEP_ALIVE %r; using 5m", value)
        return DEFAULT_KEEP_ALIVE
