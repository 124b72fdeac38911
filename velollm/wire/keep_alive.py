"""Ollama's `keep_alive` read as Ollama reads it (api.Duration): a number is seconds, a string a Go duration.
Here, beside the wire formats, so that the native API and the proxy (which answers a load / unload request for
an OpenAI-compatible upstream itself) read it alike; a bad value is an InvalidKeepAlive, the request's 400
on keep_alive in either."""

from __future__ import annotations

import math
import re
from typing import Any

from velollm.errors import InvalidRequest

DEFAULT_KEEP_ALIVE = 300.0
MAX_DURATION_S = 2**63 / 1e9  # Go's time.Duration: int64 nanoseconds (about 292 years)
_GO_DURATION = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class InvalidKeepAlive(InvalidRequest):
    """A keep_alive Ollama refuses (400): a unit-less string, NaN, a type other than number or string."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="keep_alive")


def keep_alive_seconds(value: Any, default: float | None = DEFAULT_KEEP_ALIVE) -> float | None:
    """A request's `keep_alive` → seconds; math.inf = forever; None → `default`.

    A number means seconds; a string is a Go duration ("5m", "1h30m", "-1m", "0"); a unit-less
    string other than "0" is an InvalidKeepAlive, as in Ollama.
    """
    if value is None:
        return default
    if isinstance(value, bool):
        raise InvalidKeepAlive("keep_alive must be a number or a duration string")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            raise InvalidKeepAlive("keep_alive must be a number or a duration string, got NaN")
        # Past Go's time.Duration, Ollama's conversion overflows to a negative value: forever.
        return math.inf if value < 0 or value >= MAX_DURATION_S else float(value)
    if not isinstance(value, str):
        raise InvalidKeepAlive("keep_alive must be a number or a duration string")
    return go_duration_seconds(value.strip())


def go_duration_seconds(text: str) -> float:
    """Go's time.ParseDuration in seconds, a negative one as math.inf (Ollama's "forever")."""
    sign, body = (-1.0, text[1:]) if text.startswith("-") else (1.0, text.lstrip("+"))
    if body == "0":
        return 0.0
    parts = _GO_DURATION.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise InvalidKeepAlive(f"time: invalid duration {text!r} (missing unit?)")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds >= MAX_DURATION_S:  # Go's ParseDuration: "invalid duration" on overflow
        raise InvalidKeepAlive(f"time: invalid duration {text!r}")
    return math.inf if sign < 0 and seconds > 0 else seconds
