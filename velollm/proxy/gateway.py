"""UpstreamGateway: the proxy as the serving layer sees it (velollm.api.targets.Upstream).

`find(name)` says whether the upstream answers a model name and under which spelling; `forward`
answers one request from it (pass-through or conversion, streamed); the listings feed /api/tags and
/v1/models. Ollama-like: a name is the upstream's when it is in the upstream's last successful listing
(fetched again once when it is not, so a model pulled meanwhile works at once), or always under
--proxy-only. There the listing is fetched too, for the metric labels only (`listed` names a model, any
other name is `unknown`): on the first name it lacks, then at most once per RELIST_INTERVAL_S, so that
clients sending made-up names cannot make every request list the upstream; a request waits for it at
most RELIST_WAIT_S. An upstream that is down gives 502 for the names it listed (forward raises that), and
for any other name a 404 that says its listing failed (`not_listed_because`); the first request after it
comes back succeeds: there is no cool-down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from velollm.proxy import model_admin
from velollm.proxy.answer_repair import AnswerRepair
from velollm.proxy.forward import forward, relay_stream
from velollm.proxy.legacy_answer import as_function_call
from velollm.proxy.relayed_responses import RelayedResponses
from velollm.proxy.upstream import Upstream, UpstreamConfig, UpstreamUnavailable
from velollm.proxy.upstream_answer import converted_error, error_answer, streaming
from velollm.wire.errors import api_of
from velollm.wire.legacy_functions import as_tools
from velollm.wire.names import name_key

logger = logging.getLogger(__name__)

RELIST_INTERVAL_S = 30.0  # --proxy-only: the least time between listings fetched for names not in the last one
RELIST_WAIT_S = 1.0  # --proxy-only: the longest a request waits for that listing (it goes on in the background)
# A listing older than this is fetched again in the background when the response cache asks a model's digest:
# how long a model replaced behind VeloLLM's back (`ollama pull` on the upstream) may still answer from the cache.
IDENTITY_LISTING_MAX_AGE_S = 10.0
# Before the upstream's first listing, a request waits this long for it (shared by all, once per
# IDENTITY_LISTING_MAX_AGE_S while the upstream does not answer), so that its cache key holds the digest the
# next requests' keys hold: a first answer stored under the name alone would never be found again, and an
# identical request beside it would not wait for it.
IDENTITY_FIRST_LISTING_S = 2.0
# How long /api/tags, /v1/models and /api/ps wait for the upstream's part: past it, one that accepted the
# connection and says nothing is skipped (logged), the tags showing its last listing, which the fetch still
# running in the background renews; the local models are listed at once either way.
LISTING_WAIT_S = 2.0
# How long an upstream whose /v1/responses said it has none (llama.cpp's server) is taken at its word: the creates
# meanwhile go straight to its chat route; the first one after it asks /v1/responses again, so an upstream upgraded
# to one (llama.cpp, vLLM) is used without restarting this process, at the cost of one try per this time.
NO_RESPONSES_API_S = 600.0


def _null_contents_as_empty(body: dict[str, Any]) -> dict[str, Any]:
    """Assistant turns as every server takes them: `content: null` (the openai SDK's own tool-call message,
    sent back as history) as "", and other fields that are null (`function_call`, `tool_calls`, `refusal`:
    what a pydantic dump of the SDK's message holds) left out, as absent is what null means there;
    llama-cpp-python's server refuses either null (a 500)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not any(_has_nulls(m) for m in messages):
        return body
    return {**body, "messages": [_without_nulls(m) if _has_nulls(m) else m for m in messages]}


def _without_nulls(message: dict[str, Any]) -> dict[str, Any]:
    return {k: "" if v is None else v for k, v in message.items() if v is not None or k == "content"}


def _has_nulls(message: Any) -> bool:
    return isinstance(message, dict) and message.get("role") == "assistant" and None in message.values()


class UpstreamGateway:
    """Models VeloLLM does not run natively, answered by the upstream (any path of /v1/* or /api/*)."""

    def __init__(self, config: UpstreamConfig, *, proxy_only: bool = False, upstream: Upstream | None = None,
                 relayed: RelayedResponses | None = None, name: str | None = None) -> None:
        self.upstream = upstream if upstream is not None else Upstream(config)
        self.proxy_only = proxy_only
        # The responses its Responses API stored (a router shares one map across its backends, each its `name`).
        self.relayed = relayed if relayed is not None else RelayedResponses()
        self.name = name or self.upstream.url
        self._explained: set[str] = set()
        self._relisted_at: float | None = None  # monotonic time of the last listing fetched for find (--proxy-only)
        self._identity_relisted_at = -IDENTITY_LISTING_MAX_AGE_S  # monotonic time of the last one fetched for `identity`
        self._identity_listing: asyncio.Future[Any] | None = None  # that fetch
        self._no_responses_api_at: float | None = None  # monotonic time its /v1/responses said it has none

    async def find(self, name: str, reason: str = "") -> str | None:
        """The name to send upstream for `name`, or None when the upstream does not serve it.

        `reason`: why VeloLLM does not run it natively (for the log line, once per name). An OpenAI
        server knows only its own spelling of an id ("m" vs "m:latest"); Ollama takes the name as sent.
        """
        listed = self.listed(name)
        if listed is None and not self.proxy_only:
            await self.upstream.list_models()  # a model pulled since the last listing must work at once
            listed = self.listed(name)
            if listed is None:
                return None
        elif listed is None and self._may_relist():
            # Only for the labels: the request goes upstream whatever the listing says.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.upstream.list_models()), RELIST_WAIT_S)
            listed = self.listed(name)
        if name not in self._explained:
            if len(self._explained) > 4096:  # names are client-chosen: bound the set
                self._explained.clear()
            self._explained.add(name)
            why = reason or ("--proxy-only" if self.proxy_only else "VeloLLM has no model of that name")
            logger.info("model %r goes to upstream %s (%s)", name, self.upstream.url, why)
        return listed if listed is not None and self.upstream.known_kind == "openai" else name

    def not_listed_because(self) -> str | None:
        """Why a name the upstream did not list may still be one of its models: its listing failed (the name
        was looked up in the last one, if any). None when it answered, or when it is the default address that
        nobody configured."""
        error = self.upstream.listing_error
        if error is None or not self.upstream.config.configured:
            return None
        return f"upstream {self.upstream.url} did not list its models: {error}"

    def _may_relist(self) -> bool:
        """--proxy-only: whether a name missing from the listing may fetch it again now (bounded rate)."""
        now = time.monotonic()
        if self._relisted_at is not None and now - self._relisted_at < RELIST_INTERVAL_S:
            return False
        self._relisted_at = now
        return True

    def listed(self, name: str) -> str | None:
        """The upstream's spelling of `name` when its last listing has it (no request made), else None."""
        listing = self.upstream.last_listing
        if listing is None:
            return None
        if name in listing.names:
            return name
        wanted = name_key(name)
        return next((n for n in listing.names if name_key(n) == wanted), None)

    def _identity_fetch(self) -> asyncio.Future[Any] | None:
        """The listing fetch made for identities, while it runs: started when the last listing is missing or
        older than IDENTITY_LISTING_MAX_AGE_S, at most once per that time (bounded: an upstream may be down)."""
        listing = self.upstream.last_listing
        now = time.monotonic()
        stale = listing is None or time.time() - listing.fetched_at > IDENTITY_LISTING_MAX_AGE_S
        if stale and now - self._identity_relisted_at > IDENTITY_LISTING_MAX_AGE_S:
            self._identity_relisted_at = now
            self._identity_listing = asyncio.ensure_future(self.upstream.list_models())
            self._identity_listing.add_done_callback(lambda t: t.cancelled() or t.exception())  # it logs failures
        fetch = self._identity_listing
        return fetch if fetch is not None and not fetch.done() else None

    async def identity_ready(self) -> None:
        """Returns once the upstream has been listed, or after IDENTITY_FIRST_LISTING_S of the first fetch
        (which goes on in the background); at once when a fetch failed less than IDENTITY_LISTING_MAX_AGE_S ago."""
        if self.upstream.last_listing is None and (fetch := self._identity_fetch()) is not None:
            with contextlib.suppress(Exception):  # too slow or failed: the name alone keys this request
                await asyncio.wait_for(asyncio.shield(fetch), IDENTITY_FIRST_LISTING_S)

    def identity(self, name: str) -> str:
        """The digest of `name` in the last listing (no request made; "" when it lists none: an OpenAI server,
        or a name it does not list). A listing older than IDENTITY_LISTING_MAX_AGE_S is fetched again in
        the background, for the requests that follow."""
        self._identity_fetch()
        listing = self.upstream.last_listing
        return listing.digest(name) if listing is not None else ""

    async def relist_after(self, response: Response) -> None:
        """The listing is fetched again once `response` (a relayed pull) is complete."""
        if response.status_code < 400:
            await model_admin.after(response, self.upstream.list_models)

    async def forward(self, request: Request, body: dict[str, Any], model: str | None = None,
                      tool_outcome: Callable[[str], None] | None = None, path: str | None = None) -> Response:
        """Answer the request from the upstream, in the wire format of the path it came on.

        `model`: the name `find` gave (replaces the body's); `tool_outcome`: counts repaired tool calls;
        `path`: another route than the request's (/v1/responses asks /v1/chat/completions of upstreams
        that have no Responses API).
        """
        path = path or request.url.path
        if model is not None and body.get("model") != model:
            body = {**body, "model": model}
        legacy = False
        if path == "/v1/chat/completions":  # upstreams know tools only: functions go as tools (legacy_answer)
            body, legacy = as_tools(body)  # (a contradiction in the body: an InvalidRequest, the client's 400)
            body = _null_contents_as_empty(body)
        repair = AnswerRepair.for_request(path, body, tool_outcome)
        response = await forward(request, self.upstream, api_of(path), path, body, repair)
        if path == "/v1/responses" and response.status_code == 200:
            # stored upstream: its id lookups go there
            return self.relayed.learn(response, self.name, self.upstream.url)
        if path == "/v1/responses" and self._no_responses_api(response.status_code, body):
            logger.info("upstream %s has no Responses API: /v1/responses runs on its chat route", self.upstream.url)
            self._no_responses_api_at = time.monotonic()
        return await as_function_call(response) if legacy else response

    def response_holder(self, response_id: object) -> str | None:
        """"upstream <url>" when the upstream's own Responses API stored `response_id` (created through here; one
        learned from another --upstream before a restart is not this one's)."""
        return f"upstream {self.upstream.url}" if self.relayed.holder(response_id) == self.name else None

    async def relay_stored(self, request: Request, response_id: str) -> Response | None:
        """GET /v1/responses/{id} (and its input_items), DELETE: the upstream's answer, status and body as they
        come, when it stored that response; None for an id it did not (this process's own lookup answers)."""
        if self.response_holder(response_id) is None:
            return None
        return await self.relay_lookup(request, response_id)

    async def relay_lookup(self, request: Request, response_id: str) -> Response:
        """The request (method, path and query string as sent, no body) answered by the upstream; a stream (a
        background response's events, `?stream=true`) relayed as it comes, not held until the response ends."""
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        try:
            response = await self.upstream.send(request.method, path)
            if response.status_code >= 400:
                return await converted_error(self.upstream, response, "openai")
            media_type = response.headers.get("content-type", "application/json")
            if media_type.startswith("text/event-stream"):
                return streaming(relay_stream(self.upstream, response, "openai"), response, media_type)
            data = await self.upstream.read_body(response)
        except UpstreamUnavailable as exc:
            logger.warning("%s %s: %s", request.method, request.url.path, exc)
            return error_answer("openai", exc.status_code, str(exc))
        if request.method == "DELETE":
            self.relayed.forget(response_id)
        return Response(data, status_code=response.status_code,
                        media_type=response.headers.get("content-type", "application/json"))

    async def speaks_responses(self, model: str | None = None) -> bool:
        """Whether a /v1/responses create goes to the upstream's own Responses API; else api/responses.py runs it on
        the upstream's chat route and stores it here. Known without asking /v1/responses, so that a router picks one
        backend for a create rather than one for a try that fails and another for the chat.

        An Ollama has none (its conversion answers 404). A VeloLLM found by the kind probe has one, but a response
        stored there would be out of reach of this process's GET /v1/responses/{id}, input_items and
        previous_response_id: its chat route is used. A configured kind velollm (a router's replicas) and an
        OpenAI-compatible server keep theirs, so the router relays a replica's Responses streams, errors included,
        as they come. One whose /v1/responses said it has none (`_no_responses_api`: llama.cpp's server) has none
        for NO_RESPONSES_API_S. An upstream down now: True, and forward() answers the outage in the client's format.
        `model`: unused (the router's answer depends on it)."""
        said_none = self._no_responses_api_at
        if said_none is not None and time.monotonic() - said_none < NO_RESPONSES_API_S:
            return False
        if self.upstream.config.speaks_both:
            return True
        try:
            kind = self.upstream.known_kind or await self.upstream.kind()
        except UpstreamUnavailable:
            return True
        return kind == "openai"

    def _no_responses_api(self, status: int, body: dict[str, Any]) -> bool:
        """Whether a create's answer says the upstream has no /v1/responses: a 405 or 501, or a 404 for a model its
        listing holds (else the 404 may be the model's, or the previous response's)."""
        if status in (405, 501):
            return True
        return (status == 404 and not body.get("previous_response_id")
                and self.listed(str(body.get("model") or "")) is not None)

    async def manages(self) -> bool:
        """Whether the upstream takes Ollama's model management (/api/copy, delete, create, push, blobs):
        an Ollama (or another VeloLLM); False for an OpenAI-compatible server or one not reachable now."""
        try:
            kind = self.upstream.known_kind or await self.upstream.kind()
        except UpstreamUnavailable:
            return False
        return kind == "ollama" or self.upstream.speaks_both

    async def manage(self, request: Request, body: dict[str, Any] | None) -> Response:
        """A model-management request answered by the upstream (velollm/proxy/model_admin.py); `body` None:
        the raw body (a blob). An OpenAI-compatible upstream: 404 for a name it does not list, else 501."""
        path = request.url.path
        try:
            kind = self.upstream.known_kind or await self.upstream.kind()
        except UpstreamUnavailable as exc:
            return error_answer("ollama", exc.status_code, str(exc))
        if kind != "ollama" and not self.upstream.speaks_both:
            name = model_admin.named(path, body)
            if name is not None and await self.find(name) is None:
                return error_answer("ollama", 404, f"model '{name}' not found")
            return model_admin.not_managed(self.upstream.url, path)
        response = await model_admin.relay(request, self.upstream, body)
        if path in model_admin.CHANGES_LISTING and response.status_code < 400:
            await model_admin.after(response, self.upstream.list_models)
        return response

    async def health(self) -> dict[str, Any]:
        """The upstream now (for the status page): reachable or not, its API, how many models it lists,
        and how long its listing took."""
        started = time.perf_counter()
        out: dict[str, Any] = {"url": self.upstream.url, "up": False}
        try:
            kind = await self.upstream.kind()
            path = "/api/tags" if kind == "ollama" else "/v1/models"
            status, body = await self.upstream.request_json("GET", path, timeout=5.0)
        except UpstreamUnavailable as exc:
            return {**out, "error": str(exc)}
        models = body.get("models" if kind == "ollama" else "data") if isinstance(body, dict) else None
        out.update(kind=kind, up=status == 200, latency_ms=round((time.perf_counter() - started) * 1e3, 1),
                   models=len(models) if isinstance(models, list) else None)
        if status != 200:
            out["error"] = f"GET {path} answered {status}"
        return out

    async def ollama_ps(self) -> list[dict[str, Any]]:
        """What runs on the upstream now (its GET /api/ps), listed by /api/ps after the local models (so
        `ollama ps` / `velollm ps` and `stop` see a model the upstream answers); nothing from an
        OpenAI-compatible upstream or one that does not answer."""
        try:
            answer = await asyncio.wait_for(self._ps(), LISTING_WAIT_S)  # the kind probe included
        except asyncio.TimeoutError:
            logger.warning("upstream %s: GET /api/ps did not answer within %g s; its running models are not listed",
                           self.upstream.url, LISTING_WAIT_S)
            return []
        except UpstreamUnavailable as exc:  # no upstream running (the default one is optional): quietly none
            logger.debug("upstream %s: GET /api/ps failed (%s)", self.upstream.url, exc)
            return []
        if answer is None:
            return []
        status, body = answer
        models = body.get("models") if status == 200 and isinstance(body, dict) else None
        return [m for m in models if isinstance(m, dict)] if isinstance(models, list) else []

    async def _ps(self) -> tuple[int, Any] | None:
        if (self.upstream.known_kind or await self.upstream.kind()) != "ollama":
            return None  # an OpenAI-compatible server runs no /api/ps
        return await self.upstream.request_json("GET", "/api/ps", timeout=LISTING_WAIT_S)

    async def ollama_tags(self) -> list[dict[str, Any]]:
        listing = await self.upstream.list_models(wait=LISTING_WAIT_S)
        return listing.as_ollama_tags() if listing else []

    async def openai_models(self) -> list[dict[str, Any]]:
        listing = await self.upstream.list_models(wait=LISTING_WAIT_S)
        return listing.as_openai_models() if listing else []

    async def aclose(self) -> None:
        await self.upstream.aclose()
        self.relayed.close()
