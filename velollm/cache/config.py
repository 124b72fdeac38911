"""ResponseCacheConfig: how the response caches run (built by `velollm serve` from its --cache* flags)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TTL_S = 3600.0
DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_SEMANTIC_MAX_ERROR = 0.02
# The longest a request waits, in all, for an identical or paraphrased one in flight before generating its
# own answer. A wait pays off while the answer it waits for comes sooner than its own would; a minute is
# an answer of a few thousand tokens at a few dozen tokens per second, and past it the one in flight is
# more likely stuck (a queue, an upstream that sends nothing) than about to answer.
DEFAULT_FLIGHT_WAIT_S = 60.0

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds from "90", "90s", "15m", "1h", "2d" (a plain number is seconds)."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 15m, 1h, 2d)")
    return float(m.group(1)) * _UNIT_S[(m.group(2) or "s").lower()]


@dataclass(frozen=True)
class ResponseCacheConfig:
    """`exact`: the exact tier; `semantic`: exact + semantic. `directory` holds cache.sqlite3;
    `url` (redis://...) holds the exact tier instead, shared between replicas."""

    directory: Path
    semantic: bool = False
    ttl_s: float = DEFAULT_TTL_S
    max_entries: int = DEFAULT_MAX_ENTRIES
    url: str | None = None
    embedding_model: str | None = None  # None: all-MiniLM-L6-v2 resolved offline
    semantic_max_error: float = DEFAULT_SEMANTIC_MAX_ERROR
    embedding_device: str = "auto"  # the server's --device: auto = the GPU when there is one
    flight_wait_s: float = DEFAULT_FLIGHT_WAIT_S  # longest wait for a request in flight (InFlight)

    def __post_init__(self) -> None:
        if self.ttl_s <= 0:
            raise ValueError(f"cache ttl must be positive, got {self.ttl_s}")
        if self.max_entries < 1:
            raise ValueError(f"cache max entries must be >= 1, got {self.max_entries}")
        if not self.flight_wait_s >= 0:
            raise ValueError(f"cache flight wait must be >= 0 seconds, got {self.flight_wait_s}")
        if not 0 < self.semantic_max_error < 1:
            raise ValueError(f"semantic max error must be in (0, 1), got {self.semantic_max_error}")
        if self.url is not None and not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"cache url must be redis://host:port (or rediss://, unix://), got {self.url!r}")

    @property
    def sqlite_path(self) -> Path:
        return self.directory / "cache.sqlite3"
