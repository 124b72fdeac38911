"""InFlight: the requests the cache is answering right now, so that one the cache will be able to answer
from another waits for it instead of generating the same answer again.

By exact key: identical requests run one at a time; the later ones then find the first one's answer
stored. By meaning: a request whose question the semantic tier could match with a question in flight
(same context: model, parameters, tools, earlier turns, caller, namespace; cosine over the threshold and
passed by the verifier, exactly as a semantic hit) waits for that one, then looks up again and finds its
answer as a semantic hit. A request only follows flights that entered before it, so two paraphrases never
wait for each other.

A request waits at most `max_wait_s` in all, then generates its own answer: one that waited that long for
an identical request goes on without holding the key (later identical requests wait for the holder, and
nothing waits for it). Waits are plain awaits: the middleware cancels one whose client leaves, which
leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from velollm.cache.config import DEFAULT_FLIGHT_WAIT_S
from velollm.cache.key import CacheKey

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Flight:
    key: CacheKey
    order: int
    deadline: float  # event-loop time after which it waits for nobody
    done: asyncio.Event = field(default_factory=asyncio.Event)
    vector: np.ndarray | None = None  # its question's embedding, once someone computed it


class InFlight:
    """`semantic`: the cache's SemanticTier, or None (exact only: identical requests only); `metrics`: the
    cache's CacheMetrics, or None."""

    def __init__(self, semantic: Any = None, max_wait_s: float = DEFAULT_FLIGHT_WAIT_S, metrics: Any = None) -> None:
        self.semantic = semantic
        self.max_wait_s = max_wait_s
        self._flights: set[Flight] = set()
        self._exact: dict[str, Flight] = {}  # the flight holding each key
        self._by_context: dict[str, list[Flight]] = defaultdict(list)
        self._order = itertools.count()
        self._num_waiting = 0
        self._waits = None if metrics is None else metrics.waits
        if metrics is not None:
            metrics.flights.set_function(self.num_flights)
            metrics.waiting.set_function(self.num_waiting)

    def num_flights(self) -> int:
        return len(self._flights)

    def num_waiting(self) -> int:
        return self._num_waiting

    def holder(self, key: CacheKey) -> Flight | None:
        """The flight of the request identical to `key`'s in flight, if any (`enter` waits for it)."""
        return self._exact.get(key.exact)

    async def enter(self, key: CacheKey) -> Flight:
        """Registers the request once no identical one is in flight (at once when none is), waiting at most
        `max_wait_s` for them; after that it is registered without holding the key."""
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        holds = True
        while (first := self._exact.get(key.exact)) is not None:
            if not await self._wait(first, deadline):
                holds = False
                break
        flight = Flight(key, next(self._order), deadline)
        self._flights.add(flight)
        if holds:
            self._exact[key.exact] = flight
        if key.query is not None:
            self._by_context[key.context].append(flight)
        return flight

    async def follow(self, flight: Flight, leader: Flight) -> bool:
        """Waits until `leader` (a paraphrase in flight, `followed`) leaves, within `flight`'s time to wait:
        whether it left."""
        return await self._wait(leader, flight.deadline)

    async def _wait(self, leader: Flight, deadline: float) -> bool:
        if leader.done.is_set() or asyncio.get_running_loop().time() >= deadline:
            return leader.done.is_set()
        self._num_waiting += 1
        outcome = "cancelled"  # the client left: the middleware cancels the wait
        try:
            async with asyncio.timeout_at(deadline):
                await leader.done.wait()
            outcome = "released"
        except TimeoutError:
            outcome = "timeout"
            logger.info("a request in flight took over %.0f s: generating another answer", self.max_wait_s)
        finally:
            self._num_waiting -= 1
            if self._waits is not None:
                self._waits.labels(outcome).inc()
        return outcome == "released"

    def leave(self, flight: Flight) -> None:
        """Its answer is stored (or never will be): whoever waits on it looks up again."""
        self._flights.remove(flight)
        if self._exact.get(flight.key.exact) is flight:
            del self._exact[flight.key.exact]
        if flight.key.query is not None:
            peers = self._by_context[flight.key.context]
            peers.remove(flight)
            if not peers:
                del self._by_context[flight.key.context]
        flight.done.set()

    def earlier(self, flight: Flight) -> list[Flight]:
        """Flights with a question in the same context that entered before `flight`, oldest first."""
        return [f for f in self._by_context.get(flight.key.context, ()) if f.order < flight.order]

    async def followed(self, flight: Flight) -> Flight | None:
        """The oldest unfinished earlier flight whose question a semantic lookup of `flight`'s would match
        (embeds the questions not embedded yet, on the tier's worker), or None; None too once `flight` has
        waited as long as it may."""
        tier, query = self.semantic, flight.key.query
        if tier is None or query is None or not tier.accepts(query):
            return None
        if asyncio.get_running_loop().time() >= flight.deadline:
            return None
        peers = [f for f in self.earlier(flight) if tier.accepts(f.key.query)]
        if not peers:
            return None
        if flight.vector is None:
            flight.vector = await tier.run(tier.embed, query)
        for peer in peers:
            if peer.done.is_set():
                continue
            if peer.vector is None:
                peer.vector = await tier.run(tier.embed, peer.key.query)
            if tier.same_question(query, flight.vector, peer.key.query, peer.vector):
                return peer
        return None
