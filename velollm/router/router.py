"""Router: many backends behind one endpoint, as the API's registry sees one upstream
(velollm.api.targets.Upstream: find, forward, listings).

A model name served by several backends has replicas; each request goes to one of them by the model's
policy (least-outstanding, round-robin, prefix-aware), waits there for a slot when the backend has a
concurrency limit, and, when the replica fails before the first byte reached the client (unreachable,
no answer in time, a 5xx), is sent to another replica (`retries`). A stream that breaks after its first
byte ends with an error event (the proxy's relay). With no admitted replica left: 503 + Retry-After.
A response stored by a replica's own Responses API stays that replica's: its id lookups and a create continuing
it (`previous_response_id`) go there, whatever the policy (response_holders.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from velollm.errors import Overloaded, ServeLocally
from velollm.proxy import model_admin as proxy_admin
from velollm.proxy.gateway import LISTING_WAIT_S
from velollm.proxy.relayed_responses import RelayedResponses
from velollm.router import model_admin
from velollm.router.backend import Backend
from velollm.router.config import RoutingFile
from velollm.router.health import HealthChecker
from velollm.router.local import LocalReplica
from velollm.router.metrics import RouterMetrics
from velollm.router.policy import Policy, make_policy
from velollm.router.prompt_blocks import NO_BLOCKS, PromptBlocks
from velollm.router.pull import pull_through
from velollm.router.queue import Slot, release_once
from velollm.router.response_holders import BACKEND_HEADER, ResponseHolders
from velollm.wire.errors import Api, APIError, api_of, error_response
from velollm.wire.names import name_key

logger = logging.getLogger(__name__)

RETRIED_STATUSES = (500, 502, 503, 504)  # answers before the first byte that another replica may do better
MISS_REFRESH_S = 1.0  # an unknown name lists the backends again at most this often
# bodies whose previous_response_id names a holder
_CONTINUED = ("/v1/responses", "/v1/responses/input_tokens", "/v1/responses/compact")


class Router:
    """The configured backends: the remote ones, and the native ones as local replicas (their models are
    the registry's; a name that remote backends serve too is balanced across all of them, `balances`)."""

    def __init__(self, config: RoutingFile, relayed: RelayedResponses | None = None) -> None:
        self.config = config
        self.relayed = relayed if relayed is not None else RelayedResponses()  # response id -> backend name
        self.backends = [Backend(b, config.router, self.relayed) for b in config.remote]
        self.holders = ResponseHolders(self.relayed, self.backends)
        self.local = [LocalReplica(b, config.router) for b in config.native]
        self.metrics = RouterMetrics([*self.local, *self.backends])
        self._policies: dict[str, Policy] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._miss_refresh: asyncio.Task[None] | None = None
        self._miss_refreshed_at = -MISS_REFRESH_S

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Starts the health checks and the periodic model-list refresh (the app's lifespan calls this)."""
        router = self.config.router
        self._tasks.append(asyncio.create_task(self._refresh_all()))
        if router.health_interval_s > 0:
            checker = HealthChecker([(b.health, b.probe) for b in self.backends], router.health_interval_s)
            self._tasks.append(asyncio.create_task(checker.run()))
        if router.refresh_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._refresh_loop(router.refresh_interval_s)))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(b.aclose() for b in self.backends), return_exceptions=True)
        self.relayed.close()

    async def _refresh_loop(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self._refresh_all()

    async def _refresh_all(self) -> None:
        await asyncio.gather(*(b.refresh() for b in self.backends if b.admitted), return_exceptions=True)

    # --- routing ------------------------------------------------------------------------------

    # The registry asks the backends before loading a name on demand (pinned native models still first).
    before_on_demand = True

    def listed(self, name: str) -> str | None:
        """`name` when some backend serves it (no I/O: configured names and last listings), else None."""
        return name if self.replicas(name) else None

    def identity(self, name: str) -> str:
        """The digests the backends serving `name` list for it (no I/O; the lists are refreshed periodically
        and after model management), joined; "" when none lists one (OpenAI-compatible backends)."""
        digests = {listing.digest(name) for b in self.replicas(name) if (listing := b.upstream.last_listing)}
        return ",".join(sorted(d for d in digests if d))

    async def relist_after(self, response: Response) -> None:
        """The lists are fetched again once `response` (a relayed pull) is complete."""
        if response.status_code < 400:
            await proxy_admin.after(response, self._refresh_all)

    def replicas(self, name: str) -> list[Backend]:
        """Every backend serving `name`, admitted or not."""
        return [b for b in self.backends if b.serves(name) is not None]

    async def find(self, name: str, reason: str = "") -> str | None:
        """`name` when some backend serves it (the lists are fetched again, at most once a second,
        for a name nobody listed: a model pulled meanwhile works at once), else None."""
        if not self.replicas(name):
            await self._refresh_on_miss()
            if not self.replicas(name):
                return None
        return name

    async def _refresh_on_miss(self) -> None:
        if self._miss_refresh is None or self._miss_refresh.done():
            if time.monotonic() - self._miss_refreshed_at < MISS_REFRESH_S:
                return
            self._miss_refreshed_at = time.monotonic()
            self._miss_refresh = asyncio.ensure_future(self._refresh_all())
        await asyncio.shield(self._miss_refresh)

    def balances(self, name: str) -> bool:
        """Whether a native model of that name is one replica among remote ones (the registry then hands
        requests for it to `forward(..., local=True)`), rather than answering them all itself."""
        return (any(r.serves(name) for r in self.local) and bool(self.replicas(name))
                and not self.config.local_first_for(name))

    async def speaks_responses(self, name: str) -> bool:
        """Whether a /v1/responses create for `name` goes to a replica's own Responses API: when every replica
        of it that takes requests has one (UpstreamGateway.speaks_responses). Else each create runs on the chat
        route (api/responses.py), for which the policy picks one replica, once: were the create tried on
        /v1/responses first, the chat after a replica's 404 would be a second pick, on another backend.
        A replica continuing a response it stored is asked whatever this says (`forward`'s holder)."""
        replicas = [b for b in self.replicas(name) if b.admitted_for(name)] or self.replicas(name)
        return all(await asyncio.gather(*(b.gateway.speaks_responses() for b in replicas)))

    def policy(self, name: str) -> Policy:
        key = name_key(name)
        policy = self._policies.get(key)
        if policy is None:
            chosen, margin = self.config.routing_for(name)
            policy = make_policy(chosen, load_margin=margin, table_size=self.config.router.prefix_table_size)
            self._policies[key] = policy
        return policy

    async def forward(self, request: Request, body: dict[str, Any], model: str | None = None,
                      tool_outcome: Callable[[str], None] | None = None, path: str | None = None, *,
                      local: Any = None, replica: str | None = None) -> Response:
        """One request answered by one replica of its model (another one when it fails before the
        first byte); 503 + Retry-After when none can take it. `local`: the native model's engine, when its
        native replicas are candidates too (a dead engine is ejected, one with a full queue passed over);
        choosing one raises ServeLocally (the API runs the request natively). `replica`: the backend asked first,
        without a pick (`answered_by`: the create whose /v1/responses it answered without having one runs on its
        chat route); the policy picks another only when it cannot take the request."""
        path = path or request.url.path
        api = api_of(path)
        if path == "/api/pull":
            return await self._pull(request, body)
        name = model or str(body.get("model") or "")
        # (a count of a continuation is the holder's too: it renders the conversation)
        holder = self.holders.find(body.get("previous_response_id")) if path in _CONTINUED else None
        if isinstance(holder, tuple):
            return self.holders.gone(api, holder, body["previous_response_id"])
        if holder is not None and not holder.admitted:
            return self.holders.down(api, holder, body["previous_response_id"])
        # the replica that stored the previous response holds the conversation: it answers, whatever the policy
        replicas: list[Backend | LocalReplica] = [holder] if holder is not None else [*self.replicas(name)]
        if local is not None and holder is None:
            native = [r for r in self.local if r.serves(name)]
            for r in native:
                r.can_take(local)  # a dead engine is ejected before choosing
            replicas = [*native, *replicas]
        if not replicas:  # before `policy`: a name nobody serves (client-chosen) must not add a policy each
            return self._unavailable(api, name, replicas, None)
        policy = self.policy(name)
        blocks = PromptBlocks.of(body, self.config.router.prefix_block_bytes) \
            if policy.name == "prefix-aware" else NO_BLOCKS
        tried: set[str] = set()
        failed: Response | None = None
        attempts = 0
        while attempts <= self.config.router.retries:
            candidates = [b for b in replicas if b.admitted_for(name) and b.name not in tried]
            if not candidates:
                break
            asked = next((b for b in candidates if b.name == replica), None)  # (only on the first attempt)
            backend = asked or policy.choose(candidates, blocks)  # type: ignore[assignment]
            tried.add(backend.name)
            if isinstance(backend, LocalReplica) and not backend.can_take(local):
                logger.info("the local engine cannot take a request for %r now (queue full or dead)", name)
                continue  # as a full remote queue: another replica, without using up a retry
            try:
                slot = await backend.queue.acquire()
            except Overloaded as exc:
                logger.info("backend %s cannot take a request for %r: %s", backend.name, name, exc)
                continue  # its queue is full: another replica, without using up a retry
            attempts += 1
            policy.routed(backend, blocks)
            if isinstance(backend, LocalReplica):
                raise ServeLocally(backend.name, backend.release_on_done(slot, self.metrics.observe), backend.failed)
            started = time.perf_counter()
            try:
                response = await backend.gateway.forward(request, body, backend.serves(name) or name,
                                                         tool_outcome, path)
            except BaseException:
                slot.release()
                raise
            backend.answered(response.status_code)
            if not isinstance(response, StreamingResponse) and response.status_code in RETRIED_STATUSES:
                slot.release()
                self.metrics.observe(backend.name, time.perf_counter() - started)
                failed = response
                retry = attempts <= self.config.router.retries and any(
                    b.admitted_for(name) and b.name not in tried for b in replicas)
                backend.failovers += retry
                logger.warning("backend %s answered %d for %r before the first byte; %s", backend.name,
                               response.status_code, name, "trying another replica" if retry else "giving up")
                continue
            response.headers[BACKEND_HEADER] = backend.name
            return self._held(response, slot, backend, started)
        if holder is not None and (failed is None or failed.status_code in (502, 503, 504)):
            return self.holders.down(api, holder, body["previous_response_id"])
        return self._unavailable(api, name, replicas, failed)

    @staticmethod
    def answered_by(response: Response) -> str | None:
        """The backend that answered `response` (a remote one: forward's x-velollm-backend), None for none."""
        return response.headers.get(BACKEND_HEADER)

    # --- responses stored by a replica (response_holders.py) ---------------------------------------

    def response_holder(self, response_id: object) -> str | None:
        """"backend <name> (<url>)" when a replica's own Responses API stored `response_id` (created through here)."""
        return self.holders.describe(response_id)

    async def relay_stored(self, request: Request, response_id: str) -> Response | None:
        """A lookup of a response a replica stored, answered by that replica (ResponseHolders.relay)."""
        return await self.holders.relay(request, response_id)

    def _held(self, response: Response, slot: Slot, backend: Backend, started: float) -> Response:
        """The slot (and the in-flight count) is held until the response's last byte, or until the
        client left: released by the body's `finally` and by the background task, whichever first."""
        finish = release_once(slot, lambda: self.metrics.observe(backend.name, time.perf_counter() - started))

        if not isinstance(response, StreamingResponse):
            finish()
            return response
        inner = response.body_iterator

        async def body() -> Any:
            try:
                async for chunk in inner:
                    yield chunk
            finally:
                close = getattr(inner, "aclose", None)
                if close is not None:
                    await close()
                finish()

        previous = response.background

        async def background() -> None:
            finish()
            if previous is not None:
                await previous()

        response.body_iterator = body()
        response.background = BackgroundTask(background)
        return response

    def _unavailable(self, api: Api, name: str, replicas: list[Backend | LocalReplica],
                     failed: Response | None) -> Response:
        """No replica could take the request: an upstream's own error answer (a 500 it sent) as it is;
        otherwise (all ejected, unreachable, busy) 503 + Retry-After."""
        if failed is not None and failed.status_code not in (502, 503, 504):
            return failed
        states = ", ".join(f"{b.name}: {b.health.reason or 'busy'}" for b in replicas) or "no backend"
        retry_after = str(self.config.router.retry_after_s)
        return error_response(api, APIError(503, f"no replica of {name!r} can take the request now ({states})",
                                            type="server_error", code="no_replica",
                                            headers={"Retry-After": retry_after}))

    async def _pull(self, request: Request, body: dict[str, Any]) -> Response:
        """/api/pull goes to the Ollama-speaking backends that serve the name, else to the first admitted
        one (velollm/router/pull.py)."""
        name = str(body.get("model") or body.get("name") or "")
        return await pull_through(self.backends, name, body)

    # --- model management -----------------------------------------------------------------------

    async def manages(self) -> bool:
        """Whether some admitted backend takes Ollama's model management (velollm/router/model_admin.py)."""
        return bool(await model_admin.ollama_backends(self.backends))

    async def manage(self, request: Request, body: dict[str, Any] | None) -> Response:
        """/api/copy, delete, create, push, blobs: to the Ollama backends by what they act on (model_admin.py)."""
        return await model_admin.manage(self.backends, request, body, self._refresh_all)

    # --- listings -----------------------------------------------------------------------------

    async def _listings(self) -> list[tuple[Backend, Any]]:
        async def one(b: Backend) -> Any:
            # a backend that accepted the connection and says nothing is skipped past LISTING_WAIT_S (logged)
            return await b.refresh(wait=LISTING_WAIT_S) if b.admitted else b.upstream.last_listing

        listings = await asyncio.gather(*(one(b) for b in self.backends))
        return list(zip(self.backends, listings))

    async def ollama_tags(self) -> list[dict[str, Any]]:
        return _merged([b.listing_entries(listing, "ollama") for b, listing in await self._listings()], "name")

    async def openai_models(self) -> list[dict[str, Any]]:
        return _merged([b.listing_entries(listing, "openai") for b, listing in await self._listings()], "id")

    async def ollama_ps(self) -> list[dict[str, Any]]:
        """What runs on the admitted Ollama-speaking backends now (GET /api/ps of each, merged in backend
        order, one entry per name; the API puts the local engine's first). OpenAI-compatible servers have
        no /api/ps: skipped. A backend that does not answer, or not with a model list, is skipped (logged)."""
        return _merged(list(await asyncio.gather(*(self._ps(b) for b in self.backends))), "name")

    async def _ps(self, b: Backend) -> list[dict[str, Any]]:
        if not b.admitted or b.upstream.known_kind != "ollama":
            return []
        try:
            status, data = await b.upstream.request_json("GET", "/api/ps", timeout=b.health_timeout_s + 1)
        except Exception as exc:  # noqa: BLE001 (its models are left out, the listing goes on)
            logger.warning("backend %s: GET /api/ps failed (%s); its running models are not listed", b.name,
                           getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}")
            return []
        models = data.get("models") if status == 200 and isinstance(data, dict) else None
        if not isinstance(models, list):
            logger.warning("backend %s: GET /api/ps answered %d without a model list; its running models are "
                           "not listed", b.name, status)
            return []
        return [m for m in models
                if isinstance(m, dict) and b.configured_for(str(m.get("name") or m.get("model") or ""))]

    @property
    def metrics_collector(self) -> RouterMetrics:
        return self.metrics

    async def health(self) -> dict[str, Any]:
        """The backends now (for the status page): each one's state, load and last probe time."""
        backends = [{"name": b.name, "url": b.url, "up": not b.health.ejected, "reason": b.health.reason or None,
                     "dead_models": b.dead_models.names() if isinstance(b, Backend) else [],
                     "in_flight": b.queue.in_flight, "waiting": b.queue.waiting,
                     "latency_ms": round(b.last_probe_ms, 1) if b.last_probe_ms is not None else None,
                     "models": len(b.model_names())} for b in [*self.local, *self.backends]]
        names = {name_key(n) for b in self.backends for n in b.model_names()}
        return {"url": ", ".join(b.url for b in self.backends), "kind": "router",
                "up": any(b["up"] for b in backends), "models": len(names), "backends": backends}


def _merged(lists: list[list[dict[str, Any]]], key: str) -> list[dict[str, Any]]:
    """One entry per name (Ollama's name rule), the first backend's."""
    seen: set[str] = set()
    out = []
    for entries in lists:
        for entry in entries:
            k = name_key(str(entry.get(key) or ""))
            if k and k not in seen:
                seen.add(k)
                out.append(entry)
    return out
