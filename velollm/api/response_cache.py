"""The response cache in the server: opened from ServerConfig.cache, its middleware placed after the
guards, its metrics in the server's registry, hits counted in velollm_requests_total."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.middleware import Middleware

if TYPE_CHECKING:
    from velollm.api.metrics import ServerMetrics
    from velollm.cache.config import ResponseCacheConfig
    from velollm.cache.response_cache import ResponseCache


@dataclass
class ServedCache:
    cache: ResponseCache
    middleware: Middleware

    async def close(self) -> None:
        await self.cache.close()


def open_cache(config: ResponseCacheConfig, metrics: ServerMetrics,
               identify: Callable[[str], Awaitable[str]] | None = None) -> ServedCache:
    """`identify`: model name -> its identity now, part of every key (velollm/api/model_identity.py)."""
    from velollm.cache.middleware import ResponseCacheMiddleware
    from velollm.cache.response_cache import ResponseCache

    cache = ResponseCache.open(config, registry=metrics.registry)
    return ServedCache(cache, Middleware(ResponseCacheMiddleware, cache=cache, observe=metrics.observe_request,
                                           flight_wait_s=config.flight_wait_s, identify=identify))
