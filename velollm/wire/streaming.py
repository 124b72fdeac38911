"""Streaming responses whose body generator is always closed (so its `finally` runs at once)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from velollm.wire.framing import STREAM_HEADERS


class ClosingStreamingResponse(StreamingResponse):
    """Closes its body generator however the response ends.

    Starlette cancels a stream when the client disconnects but leaves the generator suspended at its
    `yield`; closing it here runs its `finally`, which aborts engine requests or closes the upstream
    connection at once.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()


def streaming_response(chunks: AsyncIterator[bytes], media_type: str,
                       background: BackgroundTask | None = None) -> StreamingResponse:
    """`background` runs after the response, also when the client left before the first chunk (when
    the body generator never started, so its `finally` never runs)."""
    return ClosingStreamingResponse(chunks, media_type=media_type, headers=STREAM_HEADERS, background=background)
