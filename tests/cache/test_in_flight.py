"""InFlight: who waits for whom. Identical requests run one at a time; a paraphrase follows only an
earlier flight of the same context that the semantic hit rule would match."""

from __future__ import annotations

import asyncio

import numpy as np

from velollm.cache.in_flight import InFlight
from velollm.cache.key import cache_key, tenant_of

VECTORS = {"capital of France?": [1.0, 0.0], "France's capital?": [0.96, 0.28], "capital of Spain?": [0.95, 0.31],
           "tallest tree?": [0.0, 1.0]}


class Tier:
    """The SemanticTier surface InFlight uses; 'Spain' passes the cosine but not the verifier."""

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def accepts(self, query):
        return query is not None

    def embed(self, text):
        self.embedded.append(text)
        return np.array(VECTORS[text])

    async def run(self, fn, *args):
        return fn(*args)

    def same_question(self, query, vector, other, other_vector):
        return float(np.dot(vector, other_vector)) >= 0.9 and "Spain" not in query + other


def key(question: str, system: str = "s"):
    return cache_key("/v1/chat/completions", {"model": "m", "messages": [
        {"role": "system", "content": system}, {"role": "user", "content": question}]}, tenant_of(None))


def test_a_paraphrase_follows_the_earlier_flight_only():
    async def run():
        flights = InFlight(Tier())
        first = await flights.enter(key("capital of France?"))
        para = await flights.enter(key("France's capital?"))
        assert await flights.followed(first) is None  # never the later one: no two waiting for each other
        assert await flights.followed(para) is first
        assert await flights.followed(await flights.enter(key("capital of Spain?"))) is None  # verifier
        assert await flights.followed(await flights.enter(key("tallest tree?"))) is None  # cosine
        assert await flights.followed(await flights.enter(key("France's capital?", "other"))) is None  # context
        flights.leave(first)
        assert first.done.is_set() and await flights.followed(para) is None
        flights.leave(para)
        assert flights.earlier(para) == []

    asyncio.run(run())


def test_identical_requests_enter_one_after_the_other():
    async def run():
        flights = InFlight(None)
        first = await flights.enter(key("q"))
        second = asyncio.create_task(flights.enter(key("q")))
        await asyncio.sleep(0.01)
        assert not second.done()
        assert await flights.followed(first) is None  # exact only without a semantic tier
        flights.leave(first)
        flights.leave(await second)

    asyncio.run(run())
