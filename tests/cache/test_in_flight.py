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


def _metrics():
    from prometheus_client import CollectorRegistry

    from velollm.cache.metrics import CacheMetrics

    registry = CollectorRegistry()
    return registry, CacheMetrics(registry, lambda: 0)


def test_a_wait_for_an_identical_request_is_bounded_and_the_late_one_does_not_take_the_key():
    async def run():
        registry, metrics = _metrics()
        flights = InFlight(None, max_wait_s=0.3, metrics=metrics)
        first = await flights.enter(key("q"))
        second = await flights.enter(key("q"))  # waited 0.3 s, then goes on: it generates its own answer
        assert flights.holder(key("q")) is first and flights.num_flights() == 2
        assert registry.get_sample_value("velollm_cache_flight_waits_total", {"outcome": "timeout"}) == 1
        third = asyncio.create_task(flights.enter(key("q")))  # waits for the holder, not for the late one
        await asyncio.sleep(0.01)
        flights.leave(second)
        await asyncio.sleep(0.01)
        assert not third.done() and flights.holder(key("q")) is first
        flights.leave(first)
        third = await third
        assert flights.holder(key("q")) is third
        flights.leave(third)
        assert flights.num_flights() == 0 and flights.num_waiting() == 0
        assert registry.get_sample_value("velollm_cache_flight_waits_total", {"outcome": "released"}) == 1
        assert registry.get_sample_value("velollm_cache_flights") == 0

    asyncio.run(run())


def test_a_cancelled_wait_leaves_nothing_behind():
    async def run():
        registry, metrics = _metrics()
        flights = InFlight(Tier(), metrics=metrics)
        first = await flights.enter(key("capital of France?"))
        waiting = asyncio.create_task(flights.enter(key("capital of France?")))
        await asyncio.sleep(0.01)
        assert registry.get_sample_value("velollm_cache_flight_waiters") == 1
        waiting.cancel()  # what the middleware does when the client leaves
        await asyncio.gather(waiting, return_exceptions=True)
        assert flights.num_waiting() == 0 and flights.num_flights() == 1 and flights.holder(key("q")) is None
        assert registry.get_sample_value("velollm_cache_flight_waits_total", {"outcome": "cancelled"}) == 1
        para = await flights.enter(key("France's capital?"))
        follow = asyncio.create_task(flights.follow(para, await flights.followed(para)))
        await asyncio.sleep(0.01)
        follow.cancel()
        await asyncio.gather(follow, return_exceptions=True)
        flights.leave(first)
        flights.leave(para)
        assert flights.num_flights() == 0 and flights.num_waiting() == 0 and flights.earlier(para) == []
        assert registry.get_sample_value("velollm_cache_flight_waits_total", {"outcome": "cancelled"}) == 2

    asyncio.run(run())


def test_a_paraphrase_waits_only_what_is_left_of_its_time():
    async def run():
        flights = InFlight(Tier(), max_wait_s=0.05)
        first = await flights.enter(key("capital of France?"))
        para = await flights.enter(key("France's capital?"))
        leader = await flights.followed(para)
        assert leader is first and not await flights.follow(para, leader)  # 50 ms, then it generates
        late = await flights.enter(key("capital of France?"))  # timed out waiting for the identical one:
        assert await flights.followed(late) is None  # it follows no paraphrase either
        for flight in (first, para, late):
            flights.leave(flight)

    asyncio.run(run())
