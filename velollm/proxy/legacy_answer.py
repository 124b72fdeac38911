"""An upstream's answer to a request that sent the deprecated `functions`: the upstream was asked with tools
(Ollama and llama.cpp's server ignore `functions`), so its tool calls are written back as OpenAI answers such
a request, `function_call` (velollm.wire.legacy_functions), whole or streamed event by event."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from starlette.responses import Response, StreamingResponse

from velollm.wire.framing import dumps_bytes, sse_data, sse_event
from velollm.wire.legacy_functions import function_call_answer, function_call_chunk


async def as_function_call(response: Response) -> Response:
    """`response` (a /v1/chat/completions answer) with its tool calls as `function_call`; an error as it is."""
    if response.status_code != 200:
        return response
    if isinstance(response, StreamingResponse):
        if (response.media_type or "").startswith("text/event-stream"):
            response.body_iterator = _events(response.body_iterator)
            return response
        body = b"".join([c if isinstance(c, bytes) else c.encode() async for c in response.body_iterator])
        if response.background is not None:
            await response.background()  # the upstream response, read whole: closed
    elif (response.media_type or "").startswith("text/event-stream"):  # events held in one body (a forced call
        # of an Ollama upstream, taken whole; an upstream that ignored `stream`)
        return Response(_rewritten(bytes(response.body)), status_code=response.status_code,
                        media_type=response.media_type)
    else:
        body = bytes(response.body)
    try:
        answer = json.loads(body)
    except ValueError:
        return Response(body, status_code=response.status_code, media_type=response.media_type)
    return Response(dumps_bytes(function_call_answer(answer)), status_code=response.status_code,
                    media_type="application/json")


async def _events(chunks: AsyncIterator[bytes | str]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        data = chunk if isinstance(chunk, bytes) else chunk.encode()
        if b'"tool_calls"' not in data and b'"function_call"' not in data and b'"finish_reason"' not in data:
            yield data
            continue
        yield _rewritten(data)


def _rewritten(data: bytes) -> bytes:
    """Whole events with their tool calls as `function_call`; what follows the last blank line as it is."""
    events = data.replace(b"\r\n", b"\n").split(b"\n\n")
    return b"".join(_event(e) for e in events[:-1]) + events[-1]


def _event(event: bytes) -> bytes:
    try:
        obj = json.loads(sse_data(event) or b"null")
    except ValueError:
        return event + b"\n\n"
    if not isinstance(obj, dict) or "choices" not in obj:
        return event + b"\n\n"
    return sse_event(function_call_chunk(obj))
