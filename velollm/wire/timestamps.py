"""RFC 3339 timestamps as Ollama writes them (`created_at`, `modified_at`, `expires_at`) and back."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any


def rfc3339(ts: float | dt.datetime) -> str:
    """Unix seconds or a datetime -> `2025-05-10T15:06:48.639712Z` (UTC)."""
    when = ts if isinstance(ts, dt.datetime) else dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_rfc3339() -> str:
    return rfc3339(dt.datetime.now(dt.timezone.utc))


def iso_text(text: str) -> str:
    """An RFC 3339 time as datetime.fromisoformat reads it: Go writes 9 fractional digits and `Z`, Python
    reads 6 and an offset."""
    value = text.replace("Z", "+00:00")
    head, dot, rest = value.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        value = f"{head}.{rest[:min(digits, 6)]}{rest[digits:]}"
    return value


def unix_seconds(text: Any) -> int:
    """An RFC 3339 time -> unix seconds; now when unreadable."""
    try:
        return int(dt.datetime.fromisoformat(iso_text(str(text))).timestamp())
    except ValueError:
        return int(time.time())
