"""Backend: one server behind the router (VeloLLM, vLLM, Ollama, llama.cpp, any OpenAI-compatible
URL): its proxy connection, the models it serves, its request queue, its health and its numbers."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import httpx

from velollm.proxy.gateway import UpstreamGateway
from velollm.proxy.relayed_responses import RelayedResponses
from velollm.proxy.upstream import Upstream, UpstreamConfig, UpstreamTimeout, UpstreamUnavailable
from velollm.proxy.upstream_listing import UpstreamListing
from velollm.router.config import BackendConfig, RouterConfig
from velollm.router.dead_models import DeadModels
from velollm.router.engine_death_watch import EngineDeathWatch
from velollm.router.health import Health
from velollm.router.queue import BackendQueue
from velollm.wire.errors import ERROR_CODE_HEADER
from velollm.wire.names import name_key
from velollm.wire.server_version import velollm_version

logger = logging.getLogger(__name__)


class WatchedUpstream(Upstream):
    """The proxy's upstream client, reporting every transport failure to the backend's Health, also
    those in the middle of a relayed stream, and a VeloLLM's answer that its engine died (passive ejection)."""

    def __init__(self, config: UpstreamConfig, backend: Backend) -> None:
        super().__init__(config)
        self.backend = backend

    async def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await super().send(method, path, **kwargs)
        except UpstreamUnavailable as exc:
            self.backend.transport_failed(exc, before_first_byte=True)
            raise
        if response.status_code == 503 and response.headers.get(ERROR_CODE_HEADER) == "engine_dead":
            self.backend.engine_died(f"{method} {path}", model=_model_of(response.request))
        return response

    async def iter_raw(self, response: httpx.Response) -> Any:
        """The body as it arrives; a 200 stream that the backend ends because its engine died (the 503 went out as
        a 200 already: an engine_dead error in the stream, engine_death_watch.py) ejects it as the 503 would."""
        watch = EngineDeathWatch() if response.status_code == 200 else None
        try:
            async for chunk in super().iter_raw(response):
                if watch is not None and watch.feed(chunk):
                    self._stream_died(response)
                yield chunk
        except UpstreamUnavailable as exc:
            self.backend.transport_failed(exc, before_first_byte=False)
            raise
        if watch is not None and watch.finish():
            self._stream_died(response)

    def _stream_died(self, response: httpx.Response) -> None:
        self.backend.engine_died(f"a stream of {response.request.method} {response.request.url.path}", stream=True,
                                 model=_model_of(response.request))


class Backend:
    """One configured backend (not the native engine: that one is served by the API's registry)."""

    def __init__(self, config: BackendConfig, router: RouterConfig, relayed: RelayedResponses | None = None) -> None:
        self.config = config
        self.name = config.name
        self.url = config.url
        upstream_config = UpstreamConfig(url=config.url, kind=config.upstream_kind, api_key=config.api_key,
                                         connect_timeout=config.connect_timeout_s,
                                         first_byte_timeout=config.first_byte_timeout_s,
                                         idle_timeout=config.idle_timeout_s, connect_retries=0,
                                         speaks_both=config.speaks_both)
        self.upstream = WatchedUpstream(upstream_config, self)
        # Health checks on their own small client, so a down backend's probes are not counted as request errors.
        self._probe_client = Upstream(replace(upstream_config, client_shards=1, max_connections=4))
        # `relayed`: the router's map of the responses its backends stored (each gateway records its own by name and
        # URL)
        self.gateway = UpstreamGateway(upstream_config, proxy_only=True, upstream=self.upstream, relayed=relayed,
                                       name=config.name)
        self.queue = BackendQueue(config.max_concurrency, router.max_queue, router.queue_timeout_s)
        self.health = Health(config.name, router.eject_after_failures, router.readmit_after_s,
                             active_checks=router.health_interval_s > 0)
        self.dead_models = DeadModels(config.name, router.readmit_after_s, active_checks=router.health_interval_s > 0)
        self.health_timeout_s = router.health_timeout_s
        self.errors: Counter[str] = Counter()  # kind -> count (connect, timeout, status, stream)
        self.requests = 0
        self.failovers = 0  # requests that failed here before their first byte and were tried elsewhere
        self._configured = {name_key(m): m for m in config.models}

    # --- what the policies see ----------------------------------------------------------------

    @property
    def outstanding(self) -> int:
        return self.queue.outstanding

    @property
    def admitted(self) -> bool:
        return self.health.admitted

    def admitted_for(self, name: str) -> bool:
        """Requests for `name` may come here: the backend is admitted and `name`'s engine there is not dead."""
        return self.health.admitted and not self.dead_models.has(name)

    # --- models -------------------------------------------------------------------------------

    def serves(self, name: str) -> str | None:
        """The name to send to this backend for `name`, or None when it does not serve it.

        With `models` configured, only those names (also while it has not answered yet, so a down
        replica still counts as one); otherwise what its last listing holds."""
        key = name_key(name)
        listed = self._listed(key)
        if self._configured:
            if key not in self._configured:
                return None
            spelled = listed or self._configured[key]
        elif listed is None:
            return None
        else:
            spelled = listed
        # An OpenAI server knows only its own spelling of an id ("m" vs "m:latest"); Ollama (and VeloLLM)
        # resolve names themselves and get the name as the client sent it.
        return spelled if self.upstream.known_kind == "openai" else name

    def configured_for(self, name: str) -> bool:
        """Whether `name` is this backend's to list: one of its `models`, or any name without them."""
        return not self._configured or name_key(name) in self._configured

    def model_names(self) -> list[str]:
        listing = self.upstream.last_listing
        names = listing.names if listing is not None else []
        if self._configured:
            spelled = {name_key(n): n for n in names}
            return [spelled.get(k, m) for k, m in self._configured.items()]
        return [n for n in names if n]

    def _listed(self, key: str) -> str | None:
        listing = self.upstream.last_listing
        if listing is None:
            return None
        return next((n for n in listing.names if name_key(n) == key), None)

    async def refresh(self, wait: float | None = None) -> UpstreamListing | None:
        """Its listing fetched again (within `wait` seconds: else its last one; Upstream.list_models)."""
        return await self.upstream.list_models(wait=wait)

    def listing_entries(self, listing: UpstreamListing | None, api: str) -> list[dict[str, Any]]:
        """This backend's models for /api/tags ("ollama") or /v1/models ("openai"), limited to the
        configured names when there are any."""
        if listing is None:
            return []
        entries = listing.as_ollama_tags() if api == "ollama" else listing.as_openai_models()
        if not self._configured:
            return entries
        key = "name" if api == "ollama" else "id"
        return [e for e in entries if name_key(str(e.get(key) or "")) in self._configured]

    # --- health -------------------------------------------------------------------------------

    def transport_failed(self, exc: UpstreamUnavailable, *, before_first_byte: bool) -> None:
        timeout = isinstance(exc, UpstreamTimeout)
        self.errors["timeout" if timeout else "connect" if before_first_byte else "stream"] += 1
        # Refused / reset before an answer: the server is gone. A slow answer or a broken stream counts.
        self.health.failure(exc.reason, unreachable=before_first_byte and not timeout)

    def engine_died(self, request: str, *, stream: bool = False, model: str | None = None) -> None:
        """The backend (a VeloLLM) answered 503 engine_dead, or ended a `stream` with that error: the engine of
        `model` died there, and every request for it fails until the backend is restarted (or, for a model loaded
        on demand, reloads it). When the backend serves other models whose engines live, only `model` leaves its
        rotation (dead_models.py); otherwise it is ejected at once, as an unreachable one. Its other 503s
        (overloaded, shutting_down) are a busy server's: not counted."""
        self.errors["stream" if stream else "status"] += 1
        what = "ended with engine_dead" if stream else "answered 503 engine_dead"
        reason = f"{request} {what} (the engine of {model!r} died)" if model else f"{request} {what}"
        if model and self._others_live(model):
            self.dead_models.mark(model, reason)
        else:
            self.health.failure(reason, unreachable=True)

    def _others_live(self, model: str) -> bool:
        """Whether this backend serves a model besides `model` whose engine is not known to be dead."""
        key = name_key(model)
        return any(name_key(n) != key and not self.dead_models.has(n) for n in self.model_names())

    def answered(self, status: int) -> None:
        """A request's answer status (before its body): 5xx count toward ejection (503 = busy: not)."""
        self.requests += 1
        if status >= 500 and status not in (501, 503):
            self.errors["status"] += 1
            self.health.failure(f"answered {status}")
        elif status < 500:
            self.health.success()

    def _default_health_path(self) -> str:
        """A VeloLLM's /health (503 while it loads, drains, or after its engine died), an Ollama's
        /api/version, an OpenAI-compatible server's /v1/models. A backend of kind auto or ollama that turns
        out to be a VeloLLM (its /api/version says so: velollm.wire.server_version) is checked on /health
        too: its /api/version still answers 200 after its engine died."""
        if self.config.kind == "velollm" or self.velollm_version is not None:
            return "/health"
        return "/v1/models" if self.upstream.known_kind == "openai" else "/api/version"

    async def probe(self) -> str | None:
        """The active check: None when the backend answers its health path with 200, else why not."""
        path = self.config.health_path or self._default_health_path()
        started = time.perf_counter()
        try:
            status, body = await self._get(path)
            if not self.config.health_path:
                path, status, body = await self._follow(path, status, body)
        except UpstreamUnavailable as exc:
            return exc.reason
        self.last_probe_ms = (time.perf_counter() - started) * 1e3
        if path == "/health":
            return self._read_dead(status, body)
        return None if status == 200 else f"GET {path} answered {status}{_why(body)}"

    def _read_dead(self, status: int, body: Any) -> str | None:
        """A VeloLLM's /health: 200, or 503 with the models whose engine died (`dead`) beside others still
        served: healthy, those models out of its rotation; anything else (loading, draining, every model dead)
        is why it is not healthy."""
        dead = body.get("dead") if isinstance(body, dict) and status == 503 else None
        if status == 200 or (isinstance(dead, list) and dead and all(isinstance(n, str) for n in dead)
                             and any(self._others_live_beside(dead))):
            self.dead_models.replace(dead or [])
            return None
        return f"GET /health answered {status}{_why(body)}"

    def _others_live_beside(self, dead: list[str]) -> list[str]:
        keys = {name_key(n) for n in dead}
        return [n for n in self.model_names() if name_key(n) not in keys]

    async def _follow(self, path: str, status: int, body: Any) -> tuple[str, int, Any]:
        """The default check, after what the backend turned out to be: a VeloLLM (kind auto / ollama) goes
        on to /health at once; one whose /health is a 404 is no VeloLLM any more (an Ollama took its address):
        /api/version again; a 404 on /api/version is an OpenAI server whose kind is not known yet."""
        if path == "/health" and status == 404 and self.config.kind != "velollm":
            logger.info("backend %s has no /health any more: checking it on /api/version", self.name)
            self.velollm_version = None
            path, (status, body) = "/api/version", await self._get("/api/version")
        if path == "/api/version" and status == 200 and self.config.kind in ("auto", "ollama"):
            found = velollm_version(body)
            if found is not None:
                logger.info("backend %s is a VeloLLM (%s): checking it on /health", self.name, found)
                self.velollm_version = found
                path, (status, body) = "/health", await self._get("/health")
        elif path == "/api/version" and status == 404:
            path, (status, body) = "/v1/models", await self._get("/v1/models")  # an OpenAI server, kind not known yet
        return path, status, body

    async def _get(self, path: str) -> tuple[int, Any]:
        return await self._probe_client.request_json("GET", path, timeout=self.health_timeout_s)

    last_probe_ms: float | None = None
    velollm_version: str | None = None  # a VeloLLM behind kind auto / ollama, once its /api/version said so

    async def aclose(self) -> None:
        await self.upstream.aclose()
        await self._probe_client.aclose()


def _model_of(request: httpx.Request) -> str | None:
    """The model a relayed request named (its JSON body's `model`), read only once its engine is known dead."""
    try:
        body = json.loads(request.content)
    except (httpx.RequestNotRead, ValueError, TypeError):
        return None
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) and model else None


def _why(body: Any) -> str:
    """What a failed check's answer says, when it says it (a VeloLLM's /health: the engine that died, or that it
    is still loading or draining)."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    if not error and isinstance(body, dict):
        error = body.get("status")  # a VeloLLM's /health: loading, draining
    return f" ({str(error)[:300]})" if isinstance(error, str) and error else ""
