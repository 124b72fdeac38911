"""CacheEntry: one stored answer, and the Protocol every exact-tier store implements."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

# Where a stored answer keeps the `x-velollm-route` header it was sent with (the virtual model's decision,
# velollm/complexity): a hit replays the header and the chosen model's name; it is never part of a body.
ROUTE_FIELD = "x-velollm-route"


@dataclass
class CacheEntry:
    """`answer` is the whole (non-streamed) response body in the endpoint's wire format; a hit is
    replayed from it as JSON, SSE or NDJSON, whichever the new request asks for."""

    key: str
    context: str
    kind: str
    model: str
    query: str | None
    answer: dict[str, Any]
    expires: float
    created: float = field(default_factory=time.time)
    embedding: bytes | None = None  # float32 vector of `query` (semantic tier only)

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires

    def to_json(self) -> str:
        return json.dumps({"key": self.key, "context": self.context, "kind": self.kind, "model": self.model,
                           "query": self.query, "answer": self.answer, "expires": self.expires,
                           "created": self.created}, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> CacheEntry:
        d = json.loads(text)
        return cls(key=d["key"], context=d["context"], kind=d["kind"], model=d["model"], query=d["query"],
                   answer=d["answer"], expires=d["expires"], created=d["created"])


class ExactStore(Protocol):
    """Where the exact tier keeps its entries (SQLite on this machine, or a shared Redis)."""

    async def get(self, key: str) -> CacheEntry | None: ...

    async def put(self, entry: CacheEntry) -> bool:
        """False when the entry could not be stored (full disk, unreachable server): serving goes on."""
        ...

    async def count(self) -> int: ...

    async def clear(self) -> int: ...

    async def purge(self, prefix: str, keep: str, deadline: float) -> int:
        """Deletes the entries whose key begins with `prefix` but not with `keep` (velollm/cache/stale_purge.py),
        until done or the monotonic `deadline`; how many."""
        ...

    async def close(self) -> None: ...
