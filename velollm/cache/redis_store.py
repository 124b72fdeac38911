"""RedisStore: the exact tier in a Redis shared by several `velollm serve` replicas (--cache-url).

Each entry is one string key with the entry's TTL; a sorted set ranks keys by last use, so the set
is trimmed to `max_entries` least-recently-used first. An unreachable Redis is a miss (reported once
per outage), never an error to the client.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from velollm.cache.entry import CacheEntry

logger = logging.getLogger(__name__)

_PREFIX = "velollm:cache:"
_LRU = "velollm:cache-lru"  # key -> last use
_EXPIRY = "velollm:cache-expiry"  # key -> expiry time (Redis drops the entry; this drops its rank)
PURGE_SCAN = 500  # ranks a purge asks ZSCAN for at a time


def _text(member: bytes | str) -> str:
    return member.decode() if isinstance(member, bytes) else member


class RedisStore:
    def __init__(self, url: str, max_entries: int, client: Any | None = None) -> None:
        import redis.asyncio as redis

        self.url = url
        self.max_entries = max_entries
        self.client = client or redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.healthy = True
        self.errors = 0

    def _failed(self, what: str, exc: Exception) -> None:
        self.errors += 1
        if self.healthy:
            logger.error("cache redis %s: %s failed (%s); serving without it until it answers again",
                         self.url, what, exc)
        self.healthy = False

    def _ok(self) -> None:
        if not self.healthy:
            logger.info("cache redis %s answers again", self.url)
        self.healthy = True

    async def get(self, key: str) -> CacheEntry | None:
        try:
            raw = await self.client.get(_PREFIX + key)
            if raw is not None:
                await self.client.zadd(_LRU, {key: time.time()})
        except Exception as exc:  # noqa: BLE001 (redis.ConnectionError, TimeoutError, ...: a miss)
            self._failed("get", exc)
            return None
        self._ok()
        if raw is None:
            return None
        entry = CacheEntry.from_json(raw)
        return None if entry.expired() else entry

    async def touch(self, key: str) -> None:
        """`get` already refreshed the entry's rank."""

    async def put(self, entry: CacheEntry) -> bool:
        ttl_ms = max(1, int((entry.expires - time.time()) * 1000))
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.set(_PREFIX + entry.key, entry.to_json(), px=ttl_ms)
                pipe.zadd(_LRU, {entry.key: time.time()})
                pipe.zadd(_EXPIRY, {entry.key: entry.expires})
                pipe.zcard(_LRU)
                results = await pipe.execute()
            over = int(results[-1]) - self.max_entries
            if over > 0:
                await self._trim(over)
        except Exception as exc:  # noqa: BLE001 (a cache that fails is skipped, whatever failed)
            self._failed("put", exc)
            return False
        self._ok()
        return True

    async def _trim(self, over: int) -> None:
        oldest = [k for k, _ in await self.client.zpopmin(_LRU, over)]
        if oldest:
            await self.client.zrem(_EXPIRY, *oldest)
            await self.client.delete(*[_PREFIX + _text(k) for k in oldest])

    async def purge(self, prefix: str, keep: str, deadline: float) -> int:
        """Deletes the entries whose key begins with `prefix` but not with `keep` (key.entry_prefixes), found by a
        ZSCAN of the ranks (every live entry has one) in batches, until done or the monotonic `deadline`."""
        removed, cursor = 0, 0
        try:
            while True:
                cursor, ranked = await self.client.zscan(_LRU, cursor, match=prefix + "*", count=PURGE_SCAN)
                stale = [k for k in (_text(member) for member, _ in ranked) if not k.startswith(keep)]
                if stale:
                    async with self.client.pipeline(transaction=False) as pipe:
                        pipe.delete(*[_PREFIX + k for k in stale])
                        pipe.zrem(_LRU, *stale)
                        pipe.zrem(_EXPIRY, *stale)
                        await pipe.execute()
                    removed += len(stale)
                if cursor == 0 or time.monotonic() > deadline:
                    break
        except Exception as exc:  # noqa: BLE001 (a cache that fails is skipped, whatever failed)
            self._failed("purge", exc)
        else:
            self._ok()
        return removed

    async def count(self) -> int:
        """Live entries (ranks of entries that expired are dropped here)."""
        try:
            gone = await self.client.zrangebyscore(_EXPIRY, 0, time.time())
            if gone:
                await self.client.zrem(_EXPIRY, *gone)
                await self.client.zrem(_LRU, *gone)
            return int(await self.client.zcard(_LRU))
        except Exception as exc:  # noqa: BLE001 (a cache that fails is skipped, whatever failed)
            self._failed("count", exc)
            return 0

    async def clear(self) -> int:
        try:
            keys = [k async for k in self.client.scan_iter(match=_PREFIX + "*", count=1000)]
            if keys:
                await self.client.delete(*keys)
            await self.client.delete(_LRU, _EXPIRY)
        except Exception as exc:  # noqa: BLE001 (a cache that fails is skipped, whatever failed)
            self._failed("clear", exc)
            return 0
        return len(keys)

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except Exception:  # closing a client whose server is gone
            logger.debug("closing the redis client failed", exc_info=True)
