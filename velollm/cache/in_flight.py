"""InFlight: the requests the cache is answering right now, so that one the cache will be able to answer
from another waits for it instead of generating the same answer again.

By exact key: identical requests run one at a time; the later ones then find the first one's answer
stored. By meaning: a request whose question the semantic tier could match with a question in flight
(same context: model, parameters, tools, earlier turns, caller, namespace; cosine over the threshold and
passed by the verifier, exactly as a semantic hit) waits for that one, at most `max_wait_s`, then looks
up again and finds its answer as a semantic hit. A request only follows flights that entered before it,
so two paraphrases never wait for each other.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from dataclasses import dataclass, field

from typing import Any

import numpy as np

from velollm.cache.key import CacheKey


@dataclass(eq=False)
class Flight:
    key: CacheKey
    order: int
    done: asyncio.Event = field(default_factory=asyncio.Event)
    vector: np.ndarray | None = None  # its question's embedding, once someone computed it


class InFlight:
    """`semantic`: the cache's SemanticTier, or None (exact only: identical requests only)."""

    def __init__(self, semantic: Any = None) -> None:
        self.semantic = semantic
        self._exact: dict[str, Flight] = {}
        self._by_context: dict[str, list[Flight]] = defaultdict(list)
        self._order = itertools.count()

    async def enter(self, key: CacheKey) -> Flight:
        """Waits until no identical request is in flight, then registers this one."""
        while (first := self._exact.get(key.exact)) is not None:
            await first.done.wait()
        flight = self._exact[key.exact] = Flight(key, next(self._order))
        if key.query is not None:
            self._by_context[key.context].append(flight)
        return flight

    def leave(self, flight: Flight) -> None:
        """Its answer is stored (or never will be): whoever waits on it looks up again."""
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
        (embeds the questions not embedded yet, on the tier's worker), or None."""
        tier, query = self.semantic, flight.key.query
        if tier is None or query is None or not tier.accepts(query):
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
