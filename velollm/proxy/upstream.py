"""The upstream server (Ollama or any OpenAI-compatible one): one pooled httpx client.

Kept free of torch so that `velollm serve --proxy-only` starts in well under a second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from velollm.errors import VeloLLMError
from velollm.proxy.message_buffer import NDJSON_BOUNDARIES, MessageBuffer, MessageTooLong, lines
from velollm.proxy.upstream_listing import UpstreamKind, UpstreamListing
from velollm.wire.framing import dumps_bytes
from velollm.wire.ollama_host import DEFAULT_OLLAMA_HOST
from velollm.wire.server_version import velollm_version

logger = logging.getLogger(__name__)

class UpstreamUnavailable(VeloLLMError):
    """The upstream cannot be reached, or it did not answer in time (HTTP 502 / 504)."""

    def __init__(self, url: str, reason: str, status_code: int = 502) -> None:
        super().__init__(f"upstream {url} is unreachable: {reason}")
        self.url = url
        self.reason = reason
        self.status_code = status_code


class UpstreamBadAnswer(UpstreamUnavailable):
    """The upstream answered with something the proxy cannot pass on: larger than it may hold, a line
    longer than it reassembles, or no JSON where JSON is due (HTTP 502)."""

    def __init__(self, url: str, reason: str) -> None:
        VeloLLMError.__init__(self, f"upstream {url} sent an unusable answer: {reason}")
        self.url = url
        self.reason = reason
        self.status_code = 502


class UpstreamTimeout(UpstreamUnavailable):
    """The upstream accepted the request but sent nothing before the first-byte timeout (504), or a stream
    paused past the idle timeout. Said as such: "unreachable" sent users to check a network that worked,
    when the upstream was slow (a model loading past --upstream-first-byte-timeout)."""

    def __init__(self, url: str, reason: str) -> None:
        VeloLLMError.__init__(self, f"upstream {url} did not answer in time: {reason}")
        self.url = url
        self.reason = reason
        self.status_code = 504


@dataclass(frozen=True)
class UpstreamConfig:
    """Where the upstream is and how long to wait for it (seconds)."""

    url: str = DEFAULT_OLLAMA_HOST
    kind: Literal["ollama", "openai", "auto"] = "auto"
    api_key: str | None = None
    connect_timeout: float = 2.0
    # Ollama may load a model before the first byte: generous by default.
    first_byte_timeout: float = 600.0
    idle_timeout: float = 120.0
    connect_retries: int = 1
    max_connections: int = 1024
    client_shards: int = 8
    # Most bytes of one answer the proxy holds in memory (a non-streamed answer it converts, repairs or
    # validates; one line / event of a stream); past it the client gets a 502. Relayed bodies are not held.
    max_body_bytes: int = 64 * 1024 * 1024
    # The upstream answers /v1 and /api alike (another VeloLLM): requests pass through in the client's
    # API, never converted; listed through /api/tags. Kind auto finds this out itself (Upstream.speaks_both).
    speaks_both: bool = False
    # Asked for (--upstream, $OLLAMA_HOST), not the default Ollama address: when it cannot be listed, a name
    # VeloLLM does not run is a 404 that says so (the default one missing is the common case: Ollama's plain 404).
    configured: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ("ollama", "openai", "auto"):
            raise ValueError(f"upstream kind must be ollama, openai or auto, not {self.kind!r}")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"upstream URL must start with http:// or https://: {self.url!r}")
        for name in ("connect_timeout", "first_byte_timeout", "idle_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.connect_retries < 0:
            raise ValueError("connect_retries must be >= 0")
        if self.client_shards < 1:
            raise ValueError("client_shards must be >= 1")
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be >= 1")


class Upstream:
    """The upstream server: kind detection, model listing, and requests with typed failures."""

    def __init__(self, config: UpstreamConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.url = config.url.rstrip("/")
        self._kind: UpstreamKind | None = None if config.kind == "auto" else config.kind
        self._is_velollm = False  # the kind probe found a VeloLLM
        # It refused response_format json_schema and took json_object + schema instead (schema_format.py).
        self.wants_json_object_schema = False
        self.tokenize_missing = False  # it has no /extras/tokenize (prompt_tokens.py)
        self._listing: UpstreamListing | None = None
        self._listing_task: asyncio.Task[UpstreamListing] | None = None
        self._slow_task: asyncio.Task[UpstreamListing] | None = None  # the fetch a listing last gave up waiting for
        self.listing_error: str | None = None  # why the last listing fetch failed; None once one succeeded
        headers = {"accept-encoding": "identity"}
        if config.api_key:
            headers["authorization"] = f"Bearer {config.api_key}"
        # Several pooled clients, used in turn: httpcore's pool bookkeeping costs O(connections²)
        # per request, which at 64 concurrent streams dominated the proxy's CPU time. Each shard
        # keeps its connections alive; `client_shards=1` is the plain single pool.
        shards = 1 if transport is not None else config.client_shards
        # One TLS context for all shards (building one reads the CA store: ~15 ms each); none over http.
        verify: Any = httpx.create_ssl_context() if self.url.startswith("https://") else False
        self._clients = [httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            # Reads are bounded by our own first-byte / idle timers (see send/iter_raw).
            timeout=httpx.Timeout(connect=config.connect_timeout, read=None, write=30.0, pool=None),
            limits=httpx.Limits(max_connections=max(1, config.max_connections // shards),
                                max_keepalive_connections=max(1, 256 // shards)),
            transport=transport,
            verify=verify,
            trust_env=False,
        ) for _ in range(shards)]
        self._turn = 0

    async def aclose(self) -> None:
        if self._listing_task is not None:
            self._listing_task.cancel()
        for client in self._clients:
            await client.aclose()

    # --- kind -------------------------------------------------------------------------------

    @property
    def known_kind(self) -> UpstreamKind | None:
        """The kind if configured or already probed, else None (no I/O)."""
        return self._kind

    @property
    def speaks_both(self) -> bool:
        """Whether the upstream answers /v1 and /api alike, so that requests pass through in the client's API:
        configured so (a router's kind velollm), or found by the kind probe (another VeloLLM, whose
        /api/version says so: velollm.wire.server_version). Converted as for an Ollama, an OpenAI request
        lost what Ollama has not (`n`, tool_choice) although the server behind takes it."""
        return self.config.speaks_both or self._is_velollm

    async def kind(self) -> UpstreamKind:
        """`ollama` when GET /api/version answers with a version, else `openai`; a VeloLLM (its version
        answer says so) also `speaks_both`. A configured kind is taken as said: no probe.

        A failed probe (no connection, or a 5xx) is not cached: the next call probes again, so an upstream
        that starts after VeloLLM is picked up without a restart.
        """
        if self._kind is not None:
            return self._kind
        status, body = await self.request_json("GET", "/api/version", timeout=self.config.connect_timeout + 3.0)
        if status >= 500:
            # No answer about its API: a server failing now, or a proxy in front of one (nginx's 502 while Ollama
            # restarts). Taken for an OpenAI server, an Ollama stayed one until VeloLLM restarted.
            raise UpstreamUnavailable(self.url, f"GET /api/version answered {status} (--upstream-kind skips this "
                                                f"probe)")
        kind: UpstreamKind = "ollama" if status == 200 and isinstance(body, dict) and "version" in body else "openai"
        found = velollm_version(body) if kind == "ollama" else None
        self._is_velollm = found is not None
        if found is not None:
            logger.info("upstream %s is a VeloLLM (%s): /v1 and /api requests pass through unconverted", self.url, found)
        else:
            logger.info("upstream %s speaks the %s API", self.url, kind)
        self._kind = kind
        return kind

    # --- requests ---------------------------------------------------------------------------

    async def send(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        first_byte_timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send a request and return once the response headers arrived (body not read yet).

        `content` may be an async iterator (a body streamed as it comes, chunked unless `headers` give its
        content-length); `headers` add to / replace the JSON content-type. Only connection failures are
        retried: nothing reached the upstream then, so a retry cannot run a generation twice. Raises
        UpstreamUnavailable / UpstreamTimeout.
        """
        if json_body is not None:
            content = dumps_bytes(json_body)
        sent = {"content-type": "application/json"} if content is not None else {}
        sent.update(headers or {})
        self._turn = (self._turn + 1) % len(self._clients)
        client = self._clients[self._turn]
        request = client.build_request(method, path, content=content, headers=sent or None)
        timeout = first_byte_timeout or self.config.first_byte_timeout
        for attempt in range(self.config.connect_retries + 1):
            try:
                return await _within(client.send(request, stream=True), timeout)
            except httpx.ConnectError as exc:
                # Refused or reset while connecting: nothing was sent. (A connect timeout is not
                # retried: waiting twice would make a down upstream slow to report.)
                if attempt == self.config.connect_retries:
                    raise UpstreamUnavailable(self.url, _describe(exc)) from exc
                await asyncio.sleep(0.05)
            except asyncio.TimeoutError as exc:
                raise UpstreamTimeout(self.url, f"no response within {timeout:g} s") from exc
            except httpx.TransportError as exc:
                raise UpstreamUnavailable(self.url, _describe(exc)) from exc
        raise AssertionError("unreachable")

    async def iter_raw(self, response: httpx.Response) -> Any:
        """The body as it arrives; a chunk later than idle_timeout raises UpstreamTimeout."""
        if response.is_stream_consumed:
            # Already in memory (a response built from bytes, as mock transports return).
            yield response.content
            return
        chunks = response.aiter_raw()
        idle = self.config.idle_timeout
        while True:
            try:
                chunk = await _within(anext(chunks), idle)
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError as exc:
                raise UpstreamTimeout(self.url, f"no data for {idle:g} s") from exc
            except httpx.TransportError as exc:
                raise UpstreamUnavailable(self.url, _describe(exc)) from exc
            yield chunk

    def message_buffer(self, boundaries: tuple[bytes, ...]) -> MessageBuffer:
        return MessageBuffer(boundaries, self.config.max_body_bytes)

    async def iter_messages(self, response: httpx.Response, buffer: MessageBuffer) -> Any:
        """Whole messages (lines, events; several per item when they came together) as they arrive;
        an unterminated last one at the end. A message over max_body_bytes raises UpstreamBadAnswer."""
        try:
            async for chunk in self.iter_raw(response):
                out = buffer.feed(chunk)
                if out:
                    yield out
        except MessageTooLong as exc:
            raise UpstreamBadAnswer(self.url, str(exc)) from exc
        tail = buffer.tail()
        if tail:
            yield tail

    async def iter_lines(self, response: httpx.Response) -> Any:
        """Complete lines as they arrive, stripped (no newline, no "\r"); blank lines left out."""
        async for data in self.iter_messages(response, self.message_buffer(NDJSON_BOUNDARIES)):
            for line in lines(data):
                yield line

    async def read_body(self, response: httpx.Response) -> bytes:
        """The whole body (closing the response), at most max_body_bytes: beyond, UpstreamBadAnswer."""
        parts, size, limit = [], 0, self.config.max_body_bytes
        try:
            async for chunk in self.iter_raw(response):
                size += len(chunk)
                if size > limit:
                    raise UpstreamBadAnswer(self.url, f"the answer is larger than {limit} bytes (--max-upstream-body)")
                parts.append(chunk)
        finally:
            await response.aclose()
        return b"".join(parts)

    async def request_json(self, method: str, path: str, json_body: Any = None, timeout: float | None = None) -> tuple[int, Any]:
        """A whole small request: (status, parsed JSON body or the text when it is not JSON)."""
        response = await self.send(method, path, json_body=json_body, first_byte_timeout=timeout)
        body = await self.read_body(response)
        try:
            return response.status_code, json.loads(body)
        except ValueError:
            return response.status_code, body.decode("utf-8", "replace")

    # --- models -----------------------------------------------------------------------------

    @property
    def last_listing(self) -> UpstreamListing | None:
        return self._listing

    async def list_models(self, wait: float | None = None) -> UpstreamListing | None:
        """Fetch the model list; on failure return the last successful one (None if never).

        Concurrent callers share one fetch. With `wait`, the answer comes within that many seconds: a
        fetch still running then (an upstream that accepted the connection and says nothing) goes on in
        the background, its listing kept for the next caller, and this one gets the last listing now.
        """
        if self._listing_task is None or self._listing_task.done():
            self._listing_task = asyncio.ensure_future(self._fetch_listing())
            # a fetch nobody awaits to its end (all callers gave up waiting) must not leave its failure unread
            self._listing_task.add_done_callback(lambda t: t.cancelled() or t.exception())
        task = self._listing_task
        try:
            if wait is None:
                return await asyncio.shield(task)
            return await asyncio.wait_for(asyncio.shield(task), wait)
        except (UpstreamUnavailable, ValueError, KeyError, TypeError) as exc:
            logger.warning("listing the models of upstream %s failed (%s); using the last listing", self.url, exc)
            self.listing_error = str(exc)
            return self._listing
        except asyncio.TimeoutError:
            if task is not self._slow_task:  # once per slow fetch, not once per caller
                self._slow_task = task
                logger.warning("upstream %s did not list its models within %g s; skipped in this listing (%s)",
                               self.url, wait, self._last_listing_said())
            return self._listing

    def _last_listing_said(self) -> str:
        if self._listing is None:
            return "no earlier listing of it to show"
        age = time.time() - self._listing.fetched_at
        return f"its last listing, {len(self._listing.models)} models, {age:.0f} s old, is shown instead"

    async def _fetch_listing(self) -> UpstreamListing:
        kind = await self.kind()
        path = "/api/tags" if kind == "ollama" else "/v1/models"
        status, body = await self.request_json("GET", path, timeout=self.config.connect_timeout + 10.0)
        if status != 200 or not isinstance(body, dict):
            raise ValueError(f"GET {path} answered {status}")
        models = body.get("models" if kind == "ollama" else "data") or []
        listing = UpstreamListing(kind=kind, models=tuple(m for m in models if isinstance(m, dict)))
        self._listing, self.listing_error = listing, None
        return listing


if sys.version_info >= (3, 11):

    async def _within(awaitable: Any, seconds: float) -> Any:
        # asyncio.timeout schedules one timer; wait_for (3.11) would create a task per chunk.
        async with asyncio.timeout(seconds):
            return await awaitable

else:
    _within = asyncio.wait_for


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
