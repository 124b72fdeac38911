"""ComplexityRouter: the virtual model name, resolved to one of the configured models per request.

The API's `route` step asks `handles(name)` before the registry; for the virtual name, `decide`
reads the body's features, runs the policy (and the kNN when no rule matched) and returns the
RouteDecision whose model the registry then routes as usual: native, on demand or upstream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from velollm.complexity.features import RequestFeatures, extract
from velollm.complexity.knn import KnnIndex, load_index
from velollm.complexity.policy import KnnSettings, KnnVote, RouteDecision, RoutingPolicy
from velollm.wire.names import name_key

logger = logging.getLogger(__name__)

_INLINE_CHARS = 32 * 1024  # bodies with more text than this are read off the event loop


class ComplexityRouter:
    """`policy`: the rules; `index_loader`: builds the KnnIndex (blocking; default: velollm.embed's model)."""

    def __init__(self, policy: RoutingPolicy,
                 index_loader: Callable[[KnnSettings], KnnIndex] = load_index) -> None:
        self.policy = policy
        self._key = name_key(policy.name)
        self._index_loader = index_loader
        self._index: asyncio.Task[KnnIndex] | None = None
        self.created = time.time()  # what the listings say
        self._warned = False

    @property
    def name(self) -> str:
        return self.policy.name

    def handles(self, name: str) -> bool:
        return name_key(name) == self._key

    def start(self) -> None:
        """Embeds the examples in a worker thread now, so that the first request does not wait for it."""
        if self.policy.knn is not None and self._index is None:
            self._index = asyncio.ensure_future(asyncio.to_thread(self._index_loader, self.policy.knn))

    async def decide(self, body: dict[str, Any], path: str) -> RouteDecision:
        """The model for this request (sent to `path`), with the route and the reason."""
        features = await self.features(body, path)
        decision = self.policy.match(features)
        if decision is not None:
            return decision
        vote, problem = await self._vote(features)
        decision = self.policy.decide(features, vote)
        if problem:
            decision = RouteDecision(decision.model, decision.route, f"{decision.reason} ({problem})")
        return decision

    async def features(self, body: dict[str, Any], path: str) -> RequestFeatures:
        if _text_size(body) > _INLINE_CHARS:
            return await asyncio.to_thread(extract, body, path)
        return extract(body, path)

    async def _vote(self, features: RequestFeatures) -> tuple[KnnVote | None, str]:
        if self.policy.knn is None:
            return None, ""
        self.start()
        assert self._index is not None
        try:
            index = await asyncio.shield(self._index)
        except Exception as exc:  # noqa: BLE001 (the examples could not be embedded: rules and default still route)
            problem = f"kNN unavailable: {type(exc).__name__}: {exc}"
            if not self._warned:
                self._warned = True
                logger.error("routing %s; rules and the default still route", problem)
            return None, problem
        return await asyncio.to_thread(index.vote, features.query), ""

    async def close(self) -> None:
        if self._index is not None and not self._index.done():
            self._index.cancel()
            await asyncio.gather(self._index, return_exceptions=True)


def _text_size(body: dict[str, Any]) -> int:
    """A cheap upper bound of the body's text: the lengths of its top-level strings and list items."""
    size = 0
    for value in body.values():
        if isinstance(value, str):
            size += len(value)
        elif isinstance(value, list):
            size += sum(len(str(v)) if not isinstance(v, dict) else sum(len(str(x)) for x in v.values())
                        for v in value)
    return size
