"""Entries of a model's former identities are deleted from every tier once a lookup sees the model's new identity
(velollm/cache/stale_purge.py): the SQLite store and the semantic index (the default embedder), a real Redis shared
by two caches, entries stored before a restart, many entries in batches, a purge's deadline; other models' entries
and the new identity's stay, an empty identity deletes nothing, and an answer made under the old identity after the
change is not stored."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.cache.redis_server import redis_server
from tests.gc_paused import gc_paused
from velollm.cache.config import ResponseCacheConfig
from velollm.cache.key import cache_key, entry_prefixes, tenant_of
from velollm.cache.response_cache import ResponseCache
from velollm.cache.sqlite_store import PURGE_BATCH

ANSWER = {"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"},
                                                   "finish_reason": "stop"}]}
QUESTIONS = ("How do I boil an egg?", "Who painted Guernica?", "Who wrote Dracula?")


@pytest.fixture(scope="module")
def embedder():
    from velollm.embed import load_embedder

    return load_embedder()


def key(question: str, model: str = "m", identity: str = "sha256:a"):
    body = {"model": model, "temperature": 0, "messages": [{"role": "user", "content": question}]}
    return cache_key("/v1/chat/completions", body, tenant_of(None), identity=identity)


async def _fill(cache: ResponseCache) -> None:
    for q in QUESTIONS:
        assert await cache.store(key(q), ANSWER)
        assert await cache.store(key(q, model="n"), ANSWER)  # another model, the same identity
    assert await cache.store(key("Who built the Parthenon?", identity=""), ANSWER)  # m's name alone


def test_exact_keys_begin_with_the_models_and_the_identitys_tags():
    prefix, keep = entry_prefixes("m", "sha256:a")
    assert key("q").exact.startswith(keep) and keep.startswith(prefix)
    assert key("q", identity="sha256:b").exact.startswith(prefix)
    assert not key("q", identity="sha256:b").exact.startswith(keep)
    assert not key("q", model="n").exact.startswith(prefix)
    assert key("q", model="m:latest").exact[:len(prefix)] != prefix  # the name as sent: its own entries


def test_a_new_identity_purges_the_old_entries_from_sqlite_and_the_semantic_index(tmp_path, embedder):
    async def run() -> None:
        cache = ResponseCache.open(ResponseCacheConfig(tmp_path, semantic=True), embedder=embedder)
        await _fill(cache)
        assert await cache.count() == 7 and len(cache.semantic.index) == 7
        await cache.lookup(key("Anything?", identity=""))  # only the name known: nothing goes
        await cache.stale.idle()
        assert await cache.count() == 7
        assert (await cache.lookup(key("What's the way to boil an egg?"))).kind == "semantic"
        await cache.stale.idle()  # m first seen with an identity: its name-only entry goes
        assert await cache.count() == 6 and len(cache.semantic.index) == 6

        assert (await cache.lookup(key("How do I boil an egg?", identity="sha256:b"))).kind == "miss"
        await cache.stale.idle()
        assert await cache.count() == 3 and len(cache.semantic.index) == 3  # n's three
        assert [(await cache.lookup(key(q, model="n"))).kind for q in QUESTIONS] == ["exact"] * 3
        assert not await cache.store(key("Late answer", identity="sha256:a"), ANSWER)  # made before the change
        assert await cache.store(key("How do I boil an egg?", identity="sha256:b"), ANSWER)
        assert (await cache.lookup(key("What's the way to boil an egg?", identity="sha256:b"))).kind == "semantic"
        await cache.close()

        cache = ResponseCache.open(ResponseCacheConfig(tmp_path, semantic=True), embedder=embedder)
        assert await cache.count() == 4 and len(cache.semantic.index) == 4  # what was deleted stays deleted
        await cache.close()

    asyncio.run(run())


def test_entries_stored_before_a_restart_go_when_the_name_is_first_seen(tmp_path):
    async def run() -> None:
        cache = ResponseCache.open(ResponseCacheConfig(tmp_path))
        await _fill(cache)
        await cache.close()
        cache = ResponseCache.open(ResponseCacheConfig(tmp_path))
        assert (await cache.lookup(key(QUESTIONS[0]))).kind == "exact"  # unchanged: its entries stay
        await cache.stale.idle()
        assert await cache.count() == 6  # the name-only entry went
        await cache.close()
        cache = ResponseCache.open(ResponseCacheConfig(tmp_path))  # the files changed while it was down
        assert (await cache.lookup(key(QUESTIONS[0], identity="sha256:c"))).kind == "miss"
        await cache.stale.idle()
        assert await cache.count() == 3
        await cache.close()

    asyncio.run(run())


def test_many_entries_go_in_batches_off_the_event_loop_and_a_purge_stops_at_its_deadline(tmp_path):
    async def run() -> None:
        cache = ResponseCache.open(ResponseCacheConfig(tmp_path, max_entries=100_000))
        num = 40 * PURGE_BATCH + 7
        for i in range(num):
            cache.sqlite.put_sync(_entry(key(f"question {i}")))
            cache.sqlite.put_sync(_entry(key(f"question {i}", model="n")))
        assert await cache.count() == 2 * num
        assert await cache.purge("m", "sha256:b", time.monotonic() - 1) == 0  # past its deadline: nothing
        gaps = []

        async def tick() -> None:  # what a request on the event loop would wait meanwhile
            while True:
                t0 = time.perf_counter()
                await asyncio.sleep(0.001)
                gaps.append(time.perf_counter() - t0)

        with gc_paused():  # the session heap's full collections would be gaps here: not the purge's doing
            ticker = asyncio.create_task(tick())
            started = time.perf_counter()
            assert await cache.purge("m", "sha256:b", time.monotonic() + 30) == num
            elapsed = time.perf_counter() - started
            ticker.cancel()
        assert await cache.count() == num and cache.sqlite.get_sync(key("question 0", model="n").exact) is not None
        print(f"purged {num} of {2 * num} entries in {elapsed * 1e3:.0f} ms, event loop gap at most "
              f"{max(gaps) * 1e3:.1f} ms")
        assert max(gaps) < 0.25  # shared 2-core box: generous; the loop never runs a batch itself
        await cache.close()

    asyncio.run(run())


def _entry(k):
    from velollm.cache.entry import CacheEntry

    return CacheEntry(key=k.exact, context=k.context, kind=k.kind, model=k.model, query=k.query, answer=ANSWER,
                      expires=time.time() + 600)


def test_a_name_forgotten_loses_every_entry_under_each_spelling(tmp_path):
    async def run() -> None:
        cache = ResponseCache.open(ResponseCacheConfig(tmp_path))
        for model in ("x", "X:latest", "y"):
            assert await cache.store(key(QUESTIONS[0], model=model), ANSWER)
            assert (await cache.lookup(key(QUESTIONS[0], model=model))).kind == "exact"
        assert not await cache.store(key(QUESTIONS[1], model="x", identity="sha256:old"), ANSWER)  # x is sha256:a now
        await cache.stale.idle()
        assert await cache.count() == 3
        cache.stale.forget("x")  # VeloLLM deletes it (or copies over it, creates it)
        await cache.stale.idle()
        assert await cache.count() == 1 and (await cache.lookup(key(QUESTIONS[0], model="y"))).kind == "exact"
        await cache.close()

    asyncio.run(run())


def test_redis_and_the_semantic_copies_beside_it(tmp_path, embedder):
    async def run(url: str) -> None:
        config = ResponseCacheConfig(tmp_path / "a", url=url, semantic=True)
        a = ResponseCache.open(config, embedder=embedder)
        b = ResponseCache.open(ResponseCacheConfig(tmp_path / "b", url=url))  # a replica: the same Redis
        await _fill(a)
        assert await b.count() == 7 and a.sqlite.count_sync() == 7 and len(a.semantic.index) == 7
        await b.lookup(key(QUESTIONS[1], identity="sha256:b"))  # b sees the new files first: Redis is purged
        await b.stale.idle()
        assert await b.count() == 3
        assert (await a.lookup(key(QUESTIONS[1], model="n"))).kind == "exact"
        await a.lookup(key(QUESTIONS[1], identity="sha256:b"))  # then a: its own SQLite copies and vectors
        await a.stale.idle()
        assert a.sqlite.count_sync() == 3 and len(a.semantic.index) == 3
        import redis.asyncio as redis

        client = redis.Redis.from_url(url)
        names = [k.decode() async for k in client.scan_iter(match="velollm:cache:*")]
        assert len(names) == 3 and all(k.removeprefix("velollm:cache:").startswith(entry_prefixes("n", "sha256:a")[1])
                                       for k in names)
        assert await client.zcard("velollm:cache-expiry") == 3
        await client.aclose()
        await a.close()
        await b.close()

    with redis_server(tmp_path) as url:
        asyncio.run(run(url))
