"""Graceful shutdown: stop admitting, let running requests finish, then end the rest properly.

On SIGTERM (velollm/api/shutdown.py) the server keeps listening but drains: new requests get a 503
and /health says "draining"; requests already running go on until they end or `--shutdown-timeout`
passes. Then each remaining one is cut: its handler is cancelled (so its engine requests are aborted
and their KV blocks freed, or its upstream connection closed) and the client gets a proper ending in
its wire format: a 503 when nothing was sent yet, else an SSE error event and `data: [DONE]` (OpenAI),
an `{"error": ...}` line (Ollama NDJSON). Only then does uvicorn stop.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from velollm.wire.errors import APIError, ollama_stream_error, openai_error_body, send_error
from velollm.wire.framing import SSE_DONE, dumps_bytes, ndjson_line, sse_event

logger = logging.getLogger(__name__)

# Answered while draining, and not waited for: liveness and scrapes.
_NOT_DRAINED = frozenset({"/health", "/metrics"})
CUT_GRACE_S = 5.0  # how long cut requests get to write their ending and free their resources


@dataclass(eq=False)
class _Flight:
    """One running HTTP request, as far as its ending is concerned."""

    scope: dict
    task: asyncio.Task | None = None
    content_type: str = ""
    started: bool = False
    ended: bool = False
    ends_line: bool = True  # the last body chunk ended a line (so an appended event starts cleanly)
    was_cut: bool = False


class Drain:
    """The server's admission state; `run()` drains it (once, at shutdown)."""

    def __init__(self) -> None:
        self.draining = False
        self._flights: set[_Flight] = set()
        self._idle = asyncio.Event()
        self._cut_now = asyncio.Event()

    @property
    def num_running(self) -> int:
        return len(self._flights)

    async def run(self, timeout_s: float) -> None:
        """Drains: waits for the running requests up to `timeout_s` (or `cut_now()`), then cuts the rest."""
        self.draining = True
        logger.info("draining: %d request(s) running, new ones get 503; cut after %.0fs", self.num_running, timeout_s)
        if self._flights:
            self._idle.clear()
            await _first(self._idle.wait(), self._cut_now.wait(), timeout_s=timeout_s)
        if self._flights:
            logger.warning("shutdown timeout: cutting %d request(s) still running", len(self._flights))
            for flight in list(self._flights):
                flight.was_cut = True
                if flight.task is not None:
                    flight.task.cancel()
            await _first(self._idle.wait(), timeout_s=CUT_GRACE_S)

    async def wait_for(self, work: Any, timeout_s: float) -> None:
        """Waits for `work` (what runs apart from requests: background responses) up to `timeout_s`, or until
        `cut_now()`."""
        await _first(work, self._cut_now.wait(), timeout_s=timeout_s)

    def cut_now(self) -> None:
        """Ends the wait of `run()` at once (a second SIGTERM)."""
        self._cut_now.set()

    def admits(self, path: str) -> bool:
        return not self.draining or path in _NOT_DRAINED

    def add(self, flight: _Flight) -> None:
        self._flights.add(flight)

    def remove(self, flight: _Flight) -> None:
        self._flights.discard(flight)
        if not self._flights:
            self._idle.set()


async def _first(*waits: Any, timeout_s: float) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _shutdown_error() -> APIError:
    return APIError(503, "the server is shutting down", code="shutting_down")


def _ending(flight: _Flight) -> bytes:
    """What ends a cut response that already started, in its wire format."""
    err = APIError(503, "the server is shutting down: the request was cut at the shutdown timeout",
                   code="shutting_down")
    lead = b"" if flight.ends_line else b"\n\n"
    if flight.content_type.startswith("text/event-stream"):
        if flight.scope.get("path", "").startswith("/v1/responses"):
            event = {"type": "error", "code": err.code, "message": err.message, "param": None}
            return lead + b"event: error\ndata: " + dumps_bytes(event) + b"\n\n"
        return lead + sse_event(openai_error_body(err)) + SSE_DONE
    if flight.content_type.startswith("application/x-ndjson"):
        return lead[:1] + ndjson_line(ollama_stream_error(err))
    return b""


class DrainMiddleware:
    """Counts running requests, answers 503 while draining, and ends the requests `Drain` cuts."""

    def __init__(self, app: Any, *, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in _NOT_DRAINED:
            await self.app(scope, receive, send)
            return
        if not self.drain.admits(path):
            await send_error(scope, send, _shutdown_error())
            return
        flight = _Flight(scope)
        self.drain.add(flight)
        try:
            await self._run(flight, receive, send)
        finally:
            self.drain.remove(flight)

    async def _run(self, flight: _Flight, receive: Any, send: Any) -> None:
        async def tracked(message: dict) -> None:
            if flight.was_cut:
                return  # cancelled: its ending is ours to write
            if message["type"] == "http.response.start":
                flight.started = True
                headers = dict(message.get("headers") or [])
                flight.content_type = headers.get(b"content-type", b"").decode("latin-1")
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                if body:
                    flight.ends_line = body.endswith(b"\n")
                flight.ended = not message.get("more_body", False)
            await send(message)

        flight.task = asyncio.ensure_future(self.app(flight.scope, receive, tracked))
        try:
            await asyncio.wait({flight.task})
        except asyncio.CancelledError:  # uvicorn cancelled us: pass it on
            flight.task.cancel()
            raise
        if not flight.was_cut:
            flight.task.result()  # re-raises what the app raised
            return
        if flight.ended:
            return
        if not flight.started:
            await send_error(flight.scope, send, _shutdown_error())
            return
        await send({"type": "http.response.body", "body": _ending(flight), "more_body": False})
