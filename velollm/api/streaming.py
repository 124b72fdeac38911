"""Wire framing for streamed responses: SSE for /v1 (as the openai SDK parses it), NDJSON for /api."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.responses import StreamingResponse

SSE_MEDIA_TYPE = "text/event-stream"
NDJSON_MEDIA_TYPE = "application/x-ndjson"
SSE_DONE = b"data: [DONE]\n\n"
# Proxies (nginx) buffer event streams unless told not to; clients need each chunk as it is made.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def sse_event(obj: Any) -> bytes:
    """One SSE event: `data: <json>` and a blank line (no `event:` field: the SDK treats those specially)."""
    return f"data: {dumps(obj)}\n\n".encode()


def ndjson_line(obj: Any) -> bytes:
    """One NDJSON line; never a blank line (the ollama client json-parses every line)."""
    return f"{dumps(obj)}\n".encode()


class ClosingStreamingResponse(StreamingResponse):
    """Closes its body generator however the response ends.

    Starlette cancels a stream when the client disconnects but leaves the generator suspended at its
    `yield`; closing it here runs its `finally`, which aborts the engine requests at once.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()


def streaming_response(chunks: AsyncIterator[bytes], media_type: str) -> StreamingResponse:
    return ClosingStreamingResponse(chunks, media_type=media_type, headers=STREAM_HEADERS)
