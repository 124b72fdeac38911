"""Ollama's `keep_alive`: how long a model stays loaded after its last request, parsed as Ollama does."""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from velollm.errors import InvalidRequest

logger = logging.getLogger(__name__)

DEFAULT_KEEP_ALIVE = 300.0
_GO_DURATION = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
MAX_DURATION_S = 2**63 / 1e9  # Go's time.Duration: int64 nanoseconds (about 292 years)
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value: Any, default: float | None = DEFAULT_KEEP_ALIVE) -> float | None:
    """A request's `keep_alive` → seconds; math.inf = forever; None → `default`.

    A number means seconds; a string is a Go duration ("5m", "1h30m", "-1m", "0"); a unit-less
    string other than "0" is an error, as in Ollama.
    """
    if value is None:
        return default
    if isinstance(value, bool):
        raise InvalidRequest("keep_alive must be a number or a duration string", param="keep_alive")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            raise InvalidRequest("keep_alive must be a number or a duration string, got NaN", param="keep_alive")
        # Past Go's time.Duration, Ollama's conversion overflows to a negative value: forever.
        return math.inf if value < 0 or value >= MAX_DURATION_S else float(value)
    if not isinstance(value, str):
        raise InvalidRequest("keep_alive must be a number or a duration string", param="keep_alive")
    return _parse_go_duration(value.strip())


def is_unload(keep_alive: Any) -> bool:
    """`keep_alive` 0 (`ollama stop`); an invalid value is no unload (the request's parse reports it)."""
    try:
        return parse_keep_alive(keep_alive, default=None) == 0
    except InvalidRequest:
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
        return _parse_go_duration(value)
    except InvalidRequest:
        logger.warning("invalid OLLAMA_KEEP_ALIVE %r; using 5m", value)
        return DEFAULT_KEEP_ALIVE


def _parse_go_duration(text: str) -> float:
    sign, body = (-1.0, text[1:]) if text.startswith("-") else (1.0, text.lstrip("+"))
    if body == "0":
        return 0.0
    parts = _GO_DURATION.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise InvalidRequest(f"time: invalid duration {text!r} (missing unit?)", param="keep_alive")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds >= MAX_DURATION_S:  # Go's ParseDuration: "invalid duration" on overflow
        raise InvalidRequest(f"time: invalid duration {text!r}", param="keep_alive")
    return math.inf if sign < 0 and seconds > 0 else seconds
