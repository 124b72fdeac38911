"""ResponseCacheMiddleware: the cache in front of the five generation endpoints, as raw ASGI.

It sits after the guards (API key, body size) and before routing, so native and proxied models, both
APIs, streamed or not, pass through the same code. Every response of a cacheable path carries
`x-velollm-cache: hit-exact | hit-semantic | miss | bypass`. An answer of the virtual model (routing by
complexity) is stored with its `x-velollm-route` header, which a hit replays with the chosen model's name:
the decision that produced the answer, not a new one. The keys hold the model's identity (`identify`,
velollm/api/model_identity.py): a name now pointing at another model misses. A `/v1/responses` hit is handed to its endpoint
(velollm.cache.replay.hand_over_hit), which makes a new response of it: new ids, stored when asked, the
chosen model's name when the virtual model answered (its header added here).

Identical requests (same exact key) in flight at once are answered once: the later ones wait for the
first to finish and store its answer, then read it from the cache (`hit-exact`) instead of generating
it again; if the first stored nothing (an error, a client gone), the next one generates. A paraphrase of
a question in flight (velollm/cache/in_flight.py: the semantic hit rule, same context) waits for it too,
and is answered as a semantic hit; if nothing was stored, it generates. A request waits at most
`flight_wait_s` in all, then generates its own answer; one whose client leaves while it waits stops
there (counted as a 499 in the request metrics), and the request it waited for goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from velollm.cache.capture import capture
from velollm.cache.config import DEFAULT_FLIGHT_WAIT_S
from velollm.cache.entry import ROUTE_FIELD
from velollm.cache.in_flight import Flight, InFlight
from velollm.cache.key import ENDPOINTS, CacheKey, cache_key, tenant_of
from velollm.cache.policy import CacheFieldError, CachePolicy, bypass_reason, cache_policy
from velollm.cache.replay import hand_over_hit, replay
from velollm.cache.response_cache import Lookup, ResponseCache
from velollm.errors import InvalidRequest
from velollm.wire.disconnect import STATUS_CLIENT_CLOSED, ClientDisconnected, cancel_on_disconnect
from velollm.wire.errors import APIError, send_error
from velollm.wire.framing import STREAM_HEADERS
from velollm.wire.json_body import hand_over, parse_json_off_loop

logger = logging.getLogger(__name__)

HEADER = b"x-velollm-cache"
ROUTE_HEADER = ROUTE_FIELD.encode()
MAX_CAPTURE_BYTES = 16 * 1024 * 1024  # longer answers are served, not stored

# (model, endpoint, status, seconds) -> None: the server's request metrics, which count hits too.
RequestObserver = Callable[[str, str, int, float], None]
# model name -> its identity now ("" when only the name is known); answered from memory (velollm/api/model_identity.py).
ModelIdentifier = Callable[[str], Awaitable[str]]


def _headers(scope: dict) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _send_whole(send: Any, status: int, parts: list[bytes], media_type: str, label: str,
                      route: str | None = None) -> None:
    streamed = [(k.lower().encode(), v.encode()) for k, v in STREAM_HEADERS.items()] if len(parts) > 1 else []
    routed = [(ROUTE_HEADER, route.encode("latin-1", "replace"))] if route else []
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", media_type.encode()), (HEADER, label.encode()), *routed, *streamed]})
    for i, part in enumerate(parts):
        await send({"type": "http.response.body", "body": part, "more_body": i < len(parts) - 1})
    if not parts:
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class ResponseCacheMiddleware:
    def __init__(self, app: Any, *, cache: ResponseCache, observe: RequestObserver | None = None,
                 flight_wait_s: float = DEFAULT_FLIGHT_WAIT_S, identify: ModelIdentifier | None = None) -> None:
        self.app = app
        self.cache = cache
        self.observe = observe
        self.identify = identify
        self._in_flight = InFlight(cache.semantic, flight_wait_s, cache.metrics)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in ENDPOINTS:
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        raw = await _read_body(receive)
        if raw is None:
            return
        path = scope["path"]
        kind = ENDPOINTS[path]
        try:
            body = await parse_json_off_loop(raw)
        except InvalidRequest:  # the endpoint answers it in its wire format
            body = None
        if not isinstance(body, dict):
            self.cache.count_bypass("invalid")
            await self._forward(scope, receive, send, raw, "bypass")
            return
        headers = _headers(scope)
        try:
            policy = cache_policy(body, headers)
        except CacheFieldError as exc:
            await send_error(scope, send, APIError(400, str(exc), param="cache"))
            return
        if "cache" in body:
            body = {k: v for k, v in body.items() if k != "cache"}
            raw = json.dumps(body).encode()
        hand_over(scope, body)  # the endpoint reads it instead of parsing `raw` again
        identity = await self._identity(body)
        key = cache_key(path, body, tenant_of(headers.get("authorization")), policy.namespace, identity or "")
        reason = bypass_reason(kind, body) or ("no_cache" if policy.no_cache and policy.no_store else None)
        if identity is None and reason is None:
            reason = "identity"
        if reason is not None:
            self.cache.count_bypass(reason)
            await self._forward(scope, receive, send, raw, "bypass")
            return
        if policy.no_cache:
            self.cache.count_bypass("no_cache")
            await self._forward(scope, receive, send, raw, "bypass", kind if not policy.no_store else None,
                                self._storer(key, policy, None))
            return
        try:
            flight = await self._enter(receive, key)
        except ClientDisconnected:
            self._left(scope, key, t0)
            return
        try:
            await self._lookup_or_forward(scope, receive, send, raw, body, flight, kind, policy, t0)
        finally:
            self._in_flight.leave(flight)

    async def _identity(self, body: dict) -> str | None:
        """The identity of the body's model ("" when only its name is known); None when it could not be
        told (the request then bypasses the cache rather than risk another model's answer)."""
        model = body.get("model")
        if self.identify is None or not isinstance(model, str) or not model:
            return ""
        try:
            return await self.identify(model)
        except Exception:  # the endpoint answers the request (a 404, a 400) in its wire format
            logger.debug("no identity for model %r", model, exc_info=True)
            return None

    async def _enter(self, receive: Any, key: CacheKey) -> Flight:
        """The request's flight; a wait for an identical request in flight ends when the client leaves
        (ClientDisconnected). No watcher when there is nothing to wait for."""
        if self._in_flight.holder(key) is None:
            return await self._in_flight.enter(key)  # returns without awaiting anything
        return await cancel_on_disconnect(receive, self._in_flight.enter(key))

    def _left(self, scope: dict, key: CacheKey, t0: float) -> None:
        logger.info("%s: client disconnected while waiting for a request in flight", scope["path"])
        if self.observe is not None:
            self.observe(key.model, scope["path"], STATUS_CLIENT_CLOSED, time.perf_counter() - t0)

    async def _lookup(self, receive: Any, flight: Flight, policy: CachePolicy) -> Lookup:
        """The cache's answer; on a miss, that of a paraphrase in flight once it is stored (a bounded wait,
        which ends with ClientDisconnected when the client leaves)."""
        key = flight.key
        lookup = await self.cache.lookup(key, policy.max_age_s, count=False)
        if lookup.vector is not None:
            flight.vector = lookup.vector
        if lookup.entry is None and (leader := await self._in_flight.followed(flight)) is not None:
            if await cancel_on_disconnect(receive, self._in_flight.follow(flight, leader)):
                lookup = await self.cache.lookup(key, policy.max_age_s, flight.vector, count=False)
        self.cache.count_lookup(lookup)
        if lookup.vector is None:
            lookup.vector = flight.vector  # embedded while looking for a paraphrase: reused to store
        return lookup

    async def _lookup_or_forward(self, scope: dict, receive: Any, send: Any, raw: bytes, body: dict, flight: Flight,
                                 kind: str, policy: CachePolicy, t0: float) -> None:
        key = flight.key
        try:
            lookup = await self._lookup(receive, flight, policy)
        except ClientDisconnected:
            self._left(scope, key, t0)
            return
        if lookup.entry is not None:
            elapsed = time.perf_counter() - t0
            answer = dict(lookup.entry.answer)
            route = answer.pop(ROUTE_FIELD, None)
            route = route if isinstance(route, str) else None
            model = key.model
            if route is not None:  # the virtual model chose: the answer names the model that gave it
                model = str(answer.get("model") or model)
                body = {**body, "model": model}
            if kind == "responses":  # the endpoint makes a new response of it (ids, store)
                hand_over(scope, body)
                hand_over_hit(scope, answer)
                await self._forward(scope, receive, send, raw, f"hit-{lookup.kind}", route=route)
                return
            parts, media_type = replay(kind, answer, body, int(elapsed * 1e9))
            await _send_whole(send, 200, parts, media_type, f"hit-{lookup.kind}", route)
            if self.observe is not None:
                self.observe(model, scope["path"], 200, time.perf_counter() - t0)
            return
        stored: list[asyncio.Task] = []
        store = self._storer(key, policy, lookup.vector, stored)
        await self._forward(scope, receive, send, raw, "miss", kind if store else None, store)
        if stored:  # the answer is sent; identical requests waiting read it once it is stored
            await asyncio.gather(*stored, return_exceptions=True)

    def _storer(self, key: CacheKey, policy: CachePolicy, vector: Any,
                stored: list[asyncio.Task] | None = None) -> Callable[[dict[str, Any]], None] | None:
        if policy.no_store:
            return None

        def store(answer: dict[str, Any]) -> None:
            task = self.cache.store_later(key, answer, policy.ttl_s, vector)
            if stored is not None:
                stored.append(task)

        return store

    async def _forward(self, scope: dict, receive: Any, send: Any, raw: bytes, label: str,
                       kind: str | None = None, store: Callable[[dict[str, Any]], None] | None = None,
                       route: str | None = None) -> None:
        """Runs the endpoint with the (rewritten) body; captures a 200 answer for `store`. `route`: the
        x-velollm-route a replayed answer was given (the endpoint makes no decision of its own then)."""
        added = [(HEADER, label.encode())] + ([(ROUTE_HEADER, route.encode("latin-1", "replace"))] if route else [])
        replayed = False

        async def receive_body() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        state: dict[str, Any] = {"status": 0, "media": "", "parts": [], "size": 0, "route": None}

        async def send_tagged(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                state["media"] = next((v.decode("latin-1") for k, v in headers if k.lower() == b"content-type"), "")
                state["route"] = next((v.decode("latin-1") for k, v in headers if k.lower() == ROUTE_HEADER), None)
                message = {**message, "headers": [*headers, *added]}
            elif message["type"] == "http.response.body" and store is not None and state["status"] == 200:
                chunk = message.get("body", b"")
                state["size"] += len(chunk)
                if state["size"] <= MAX_CAPTURE_BYTES:
                    state["parts"].append(chunk)
                if not message.get("more_body", False) and state["size"] <= MAX_CAPTURE_BYTES:
                    answer = capture(kind or "", b"".join(state["parts"]), state["media"])
                    if answer is not None:
                        if state["route"]:
                            answer[ROUTE_FIELD] = state["route"]
                        store(answer)
            await send(message)

        await self.app(scope, receive_body, send_tagged)


async def _read_body(receive: Any) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
