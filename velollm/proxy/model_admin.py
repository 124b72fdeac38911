"""Ollama's model management relayed to one Ollama upstream as the client sent it: POST /api/copy,
DELETE /api/delete (200 with an empty body), POST /api/create and /api/push (NDJSON progress relayed
line by line as it comes, or the single object with `stream: false`), HEAD|POST /api/blobs/<digest>
(201 created, 200 present). Error statuses are passed on with the upstream's `{"error"}`.

A blob upload is streamed to the upstream as it arrives (uvicorn's flow control holds at most ~64 KiB of it
in this process), never read whole; the upstream checks its digest. It is asked with HEAD first: Ollama
answers a POST of a blob it has at once, without reading the body, and a client still sending a large
file would then see its connection closed. A client that sends nothing for `idle_timeout` is cut off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from velollm.proxy.forward import relay_stream
from velollm.proxy.upstream import Upstream, UpstreamUnavailable
from velollm.proxy.upstream_answer import converted_error, error_answer, streaming
from velollm.wire.framing import NDJSON_MEDIA_TYPE

logger = logging.getLogger(__name__)

BLOB_PREFIX = "/api/blobs/"
CHANGES_LISTING = ("/api/copy", "/api/delete", "/api/create")  # a success changes what the upstream lists
# A blob upload is sent whole before the upstream's first byte: this bounds the upload, not a silence
# (the client's silence is bounded by idle_timeout, the upstream's by httpx's write timeout).
BLOB_UPLOAD_TIMEOUT_S = 24 * 3600.0
STATUS_CLIENT_CLOSED = 499


class ClientStalled(Exception):
    """The client sent no byte of its body for the idle timeout."""


def named(path: str, body: dict[str, Any] | None) -> str | None:
    """The existing model a request acts on: delete's and push's `model` (or `name`), copy's `source`."""
    if body is None or path not in ("/api/delete", "/api/copy", "/api/push"):
        return None
    value = body.get("source") if path == "/api/copy" else body.get("model") or body.get("name")
    return value if isinstance(value, str) and value else None


async def after(response: Response, refresh: Callable[[], Awaitable[Any]]) -> None:
    """Runs `refresh` (the upstream's model listing fetched again) once `response` is complete: now for a
    whole answer, at the end of the stream for a streamed one (create's and pull's progress), before the
    stream ends when it ends normally: a client that reads it to the end then finds the new listing (and
    the response cache the model's new digest: velollm/api/model_identity.py)."""
    if not isinstance(response, StreamingResponse):
        await refresh()
        return
    inner = response.body_iterator

    async def body() -> AsyncIterator[Any]:
        done = False
        try:
            async for chunk in inner:
                yield chunk
            done = True
        finally:
            close = getattr(inner, "aclose", None)
            if close is not None:
                await close()
            if not done:
                asyncio.ensure_future(refresh())  # not awaited here: the stream is ending by cancellation
        await refresh()

    response.body_iterator = body()


def not_managed(url: str, path: str, kind: str = "OpenAI-compatible") -> Response:
    """What an upstream that has no model management (llama.cpp's server, vLLM) gives: a clear 501."""
    what = path.removeprefix("/api/").split("/", 1)[0]
    return error_answer("ollama", 501, f"{what}: the upstream {url} is an {kind} server, which has no Ollama "
                                       "model management; do this on that server itself")


async def relay(request: Request, upstream: Upstream, body: dict[str, Any] | None) -> Response:
    """The upstream's answer to the request (method and path as sent); `body` None: the raw body (a blob)."""
    path = request.url.path
    try:
        if body is None and request.method == "POST":
            return await _upload(request, upstream, path)
        response = await upstream.send(request.method, path, json_body=body)
        return await relayed(upstream, response)
    except UpstreamUnavailable as exc:
        logger.warning("%s %s: %s", request.method, path, exc)
        return error_answer("ollama", exc.status_code, str(exc))


async def relayed(upstream: Upstream, response: httpx.Response) -> Response:
    """An upstream answer as the client gets it: errors in Ollama's shape, NDJSON streamed, the rest whole."""
    media_type = response.headers.get("content-type", "")
    if response.status_code >= 400:
        return await converted_error(upstream, response, "ollama")
    if media_type.startswith(NDJSON_MEDIA_TYPE):
        return streaming(relay_stream(upstream, response, "ollama"), response, media_type)
    data = await upstream.read_body(response)  # an empty body (copy, delete, blobs) or one JSON object
    return Response(data, status_code=response.status_code, media_type=media_type or None)


async def _upload(request: Request, upstream: Upstream, path: str) -> Response:
    head = await upstream.send("HEAD", path)
    await head.aclose()
    if head.status_code == 200:
        await drain(request, upstream.config.idle_timeout)
        return Response(status_code=200)
    headers = {"content-type": request.headers.get("content-type") or "application/octet-stream"}
    length = request.headers.get("content-length")
    if length is not None and length.isdigit():
        headers["content-length"] = length  # sent as it came; httpx then sends no chunked encoding
    try:
        response = await upstream.send("POST", path, content=client_body(request, upstream.config.idle_timeout),
                                       headers=headers, first_byte_timeout=BLOB_UPLOAD_TIMEOUT_S)
    except ClientDisconnect:
        logger.info("POST %s: the client went away during the upload", path)
        return Response(status_code=STATUS_CLIENT_CLOSED)
    except ClientStalled as exc:
        return error_answer("ollama", 408, str(exc))
    return await relayed(upstream, response)


async def client_body(request: Request, idle_s: float) -> AsyncIterator[bytes]:
    """The request body as it arrives, chunk by chunk; ClientStalled after `idle_s` without a byte."""
    chunks = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), idle_s)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise ClientStalled(f"the client sent no data for {idle_s:g} s") from None
        if chunk:
            yield chunk


async def drain(request: Request, idle_s: float) -> None:
    """Reads and drops the request body (so that the client can finish sending it and read the answer)."""
    try:
        async for _ in client_body(request, idle_s):
            pass
    except (ClientDisconnect, ClientStalled):
        pass
