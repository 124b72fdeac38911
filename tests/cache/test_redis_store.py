"""The exact tier in a real Redis shared by two caches (two replicas), and a Redis that goes away."""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

from tests.cache.redis_server import redis_server
from velollm.cache.config import ResponseCacheConfig
from velollm.cache.key import cache_key, tenant_of
from velollm.cache.response_cache import ResponseCache

BODY = {"model": "m", "messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0}
ANSWER = {"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris"},
                                                   "finish_reason": "stop"}]}


def key(body=BODY, auth=None):
    return cache_key("/v1/chat/completions", body, tenant_of(auth))


def test_two_replicas_share_the_exact_tier(tmp_path):
    async def run(url: str) -> None:
        a = ResponseCache.open(ResponseCacheConfig(tmp_path / "a", url=url))
        b = ResponseCache.open(ResponseCacheConfig(tmp_path / "b", url=url))
        assert (await b.lookup(key())).kind == "miss"
        assert await a.store(key(), ANSWER)
        hit = await b.lookup(key())
        assert hit.kind == "exact" and hit.entry.answer == ANSWER
        assert (await b.lookup(key(auth="Bearer other"))).kind == "miss"  # never across API keys
        assert await b.count() == 1
        assert await a.clear() == 1 and (await b.lookup(key())).kind == "miss"
        await a.close()
        await b.close()

    with redis_server(tmp_path) as url:
        asyncio.run(run(url))


def test_lru_trim_and_ttl_in_redis(tmp_path):
    async def run(url: str) -> None:
        cache = ResponseCache.open(ResponseCacheConfig(tmp_path / "a", url=url, max_entries=2))
        bodies = [{**BODY, "messages": [{"role": "user", "content": f"question {i}"}]} for i in range(3)]
        for body in bodies:
            await cache.store(key(body), ANSWER)
            await asyncio.sleep(0.01)
        assert await cache.count() == 2 and (await cache.lookup(key(bodies[0]))).kind == "miss"
        await cache.store(key(), ANSWER, ttl_s=0.2)
        await asyncio.sleep(0.4)
        assert (await cache.lookup(key())).kind == "miss"
        await cache.close()

    with redis_server(tmp_path) as url:
        asyncio.run(run(url))


def test_an_unreachable_redis_is_a_miss_then_recovers(tmp_path, caplog):
    async def run() -> None:
        with redis_server(tmp_path) as url:
            cache = ResponseCache.open(ResponseCacheConfig(tmp_path / "a", url=url))
            assert await cache.store(key(), ANSWER)
        # the server is gone: lookups are misses and stores fail, nothing raises
        assert (await cache.lookup(key())).kind == "miss"
        assert not await cache.store(key(), ANSWER)
        assert "serving without it" in caplog.text
        with redis_server(tmp_path, port=urlparse(url).port):
            assert await cache.store(key(), ANSWER)
            assert (await cache.lookup(key())).kind == "exact"
            assert "answers again" in caplog.text
            await cache.close()

    asyncio.run(run())
