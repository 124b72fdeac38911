"""Request guards as raw ASGI middleware (no BaseHTTPMiddleware: it would break disconnect detection).

Order, outermost first (see app.py): origin check (origins.py), CORS, Host check, API key, body size.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import socket
from typing import Any

from velollm.api.origins import OriginPolicy
from velollm.wire.errors import APIError, send_error

# reachable without the API key: liveness checks, and the status page's code (its data needs the key)
_OPEN_PATHS = frozenset({"/", "/health", "/status.js"})
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")

CORS_HEADERS = ["Authorization", "Content-Type", "User-Agent", "Accept", "X-Requested-With", "OpenAI-Beta",
                "x-stainless-arch", "x-stainless-async", "x-stainless-custom-poll-interval",
                "x-stainless-helper-method", "x-stainless-lang", "x-stainless-os", "x-stainless-package-version",
                "x-stainless-poll-helper", "x-stainless-retry-count", "x-stainless-runtime",
                "x-stainless-runtime-version", "x-stainless-timeout"]
# Response headers a browser page may read (the rest are hidden from cross-origin scripts).
CORS_EXPOSE_HEADERS = ["x-velollm-cache", "x-velollm-route", "x-velollm-context", "x-velollm-backend", "Retry-After"]


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def host_is_local(host_header: str, hostname: str) -> bool:
    """Ollama's rule against DNS rebinding: loopback/private/unspecified IPs and local names only."""
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8000
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host in ("", "localhost", hostname.lower()):
        return True
    try:
        ip = ipaddress.ip_address(host)
        return ip.is_loopback or ip.is_private or ip.is_unspecified
    except ValueError:
        return host.endswith(_LOCAL_SUFFIXES)


class HostCheckMiddleware:
    """403 for a Host header that is not local, when the server listens on loopback only."""

    def __init__(self, app: Any, *, enabled: bool) -> None:
        self.app = app
        self.enabled = enabled
        self.hostname = socket.gethostname()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self.enabled and scope["type"] == "http":
            host = _header(scope, b"host")
            if host is not None and not host_is_local(host, self.hostname):
                await send_error(scope, send, APIError(403, f"host {host!r} is not allowed", code="forbidden_host"))
                return
        await self.app(scope, receive, send)


class OriginCheckMiddleware:
    """403, in the caller's wire format, for any request (preflight or not) from a disallowed origin."""

    def __init__(self, app: Any, *, policy: OriginPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            origin = _header(scope, b"origin")
            if origin is not None and not self.policy.allows(origin, _header(scope, b"host")):
                await send_error(scope, send, APIError(
                    403, f"origin {origin!r} is not allowed (add it with --cors-origins or OLLAMA_ORIGINS)",
                    code="forbidden_origin"))
                return
        await self.app(scope, receive, send)


class APIKeyMiddleware:
    """401 unless `Authorization: Bearer KEY` matches, on every route but / and /health."""

    def __init__(self, app: Any, *, api_key: str | None) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if (self.expected is not None and scope["type"] == "http" and scope["path"] not in _OPEN_PATHS
                and scope["method"] != "OPTIONS"):
            given = (_header(scope, b"authorization") or "").encode("latin-1")
            if not hmac.compare_digest(given, self.expected):
                await send_error(scope, send, APIError(401, "invalid or missing API key (Authorization: Bearer KEY)",
                                                       code="invalid_api_key",
                                                       headers={"WWW-Authenticate": "Bearer"}))
                return
        await self.app(scope, receive, send)


# Raw (not JSON) bodies of any size, streamed by their route and guarded there (api/blobs.py): a GGUF blob.
STREAMED_BODY_PREFIXES = ("/api/blobs/",)


class BodyLimitMiddleware:
    """413 for a body over `max_bytes`; reads the (JSON-sized) body first, then replays it to the app.
    408 (and the connection closed) when the client sends nothing for `idle_s` in the middle of it: a client
    that declares a body and stalls would otherwise hold its connection and what it sent forever.
    Routes that stream a raw body (STREAMED_BODY_PREFIXES) get it as it comes, unread and unlimited."""

    def __init__(self, app: Any, *, max_bytes: int, idle_s: float = 60.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.idle_s = idle_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if (scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS")
                or scope["path"].startswith(STREAMED_BODY_PREFIXES)):
            await self.app(scope, receive, send)
            return
        too_big = APIError(413, f"request body is larger than {self.max_bytes} bytes", code="request_too_large")
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_error(scope, send, too_big)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.idle_s)
            except asyncio.TimeoutError:
                await send_error(scope, send, APIError(
                    408, f"the client sent no body data for {self.idle_s:g} s", code="request_timeout",
                    headers={"Connection": "close"}))
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send_error(scope, send, too_big)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # later calls wait for http.disconnect, as the app expects

        await self.app(scope, replay, send)
