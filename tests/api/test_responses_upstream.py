"""api/responses_upstream.sse_chunks: the chat chunks of a proxy's answer, read from a live stream, a held one, or a
whole JSON answer."""

from __future__ import annotations

import asyncio
import json

from starlette.responses import JSONResponse, Response, StreamingResponse

from velollm.api.responses_upstream import sse_chunks
from velollm.proxy.whole_as_stream import sse_body

WHOLE = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}


def _read(answer: Response) -> list[dict]:
    async def chunks() -> list[dict]:
        return [chunk async for chunk in sse_chunks(answer)]

    return asyncio.run(chunks())


def test_held_events_are_read_as_events():
    """A stream the proxy holds in one body (an upstream that ignored `stream`, an Ollama upstream's forced call):
    it was parsed as one JSON object, a JSONDecodeError that failed the Responses create."""
    held = Response(sse_body(WHOLE, "/v1/chat/completions", {"stream": True}), media_type="text/event-stream")
    chunks = _read(held)
    assert [c["object"] for c in chunks] == ["chat.completion.chunk"] * 2
    assert chunks[0]["choices"][0]["delta"]["content"] == "hi" and chunks[1]["choices"][0]["finish_reason"] == "stop"


def test_a_live_stream_and_a_whole_answer():
    frames = [sse_body(WHOLE, "/v1/chat/completions", {"stream": True})]

    async def body():
        for frame in frames:
            yield frame

    live = _read(StreamingResponse(body(), media_type="text/event-stream"))
    assert [c["choices"][0]["finish_reason"] for c in live] == [None, "stop"]
    assert _read(JSONResponse(WHOLE)) == [json.loads(json.dumps(WHOLE))]
