"""A whole answer asked for, a stream received: the stream put back together as the one JSON body the client
asked for. An upstream may stream whatever `stream` says (a server that always streams, a gateway in between);
relayed as it came, the openai SDK's whole create returns the SSE text as a str and the ollama client's whole
call fails with a JSONDecodeError, neither an answer nor an error it can read. A stream that carried an error
or ended before its answer did is a 502 in the client's shape, with the upstream's message."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.responses import JSONResponse, Response

from velollm.cache.capture import capture
from velollm.proxy.upstream import Upstream, UpstreamBadAnswer
from velollm.proxy.upstream_answer import error_answer, read_json
from velollm.wire.errors import Api, error_message
from velollm.wire.framing import sse_data

# The generation paths whose whole answer a stream can be put back into, and the kind capture() reads them as.
KINDS = {"/v1/chat/completions": "chat", "/v1/completions": "completion",
         "/api/chat": "ollama_chat", "/api/generate": "ollama_generate"}
_ENDED_EARLY = "the upstream's stream ended before its answer did"


def asks_whole(api: Api, path: str, body: dict[str, Any]) -> bool:
    """Whether the request to `path` asked for one JSON body: OpenAI streams only when asked, Ollama unless told
    not to (`stream: false`)."""
    if path not in KINDS:
        return False
    return body.get("stream") is False if api == "ollama" else not body.get("stream")


async def collapsed(relay: AsyncIterator[bytes], upstream_response: httpx.Response, api: Api, path: str,
                    media_type: str, max_bytes: int) -> Response:
    """The relayed stream (its messages whole, a break already turned into an error message) read to its end,
    at most `max_bytes` of it (--max-upstream-body), and answered whole."""
    parts: list[bytes] = []
    size = 0
    try:
        async for part in relay:
            size += len(part)
            if size > max_bytes:
                return error_answer(api, 502, f"the upstream's answer is larger than {max_bytes} bytes "
                                              f"(--max-upstream-body)")
            parts.append(part)
    finally:
        await upstream_response.aclose()
    raw = b"".join(parts)
    error = _stream_error(raw, api)
    if error is not None:
        return error_answer(api, 502, error)
    if api == "openai" and b"[DONE]" not in raw:  # some servers end without it: a finish reason says it is whole
        raw += b"\n\ndata: [DONE]\n\n"
    answer = capture(KINDS[path], raw, media_type)
    if answer is None:
        return error_answer(api, 502, _ENDED_EARLY)
    return JSONResponse(answer)


def _stream_error(raw: bytes, api: Api) -> str | None:
    """The message of the stream's first error (an upstream's error event or line, or the proxy's own for a
    stream that broke), None when it has none."""
    messages = (sse_data(e) for e in raw.replace(b"\r\n", b"\n").split(b"\n\n")) if api == "openai" \
        else iter(raw.splitlines())
    for data in messages:
        try:
            obj = json.loads(data) if data.strip() and data != b"[DONE]" else None
        except ValueError:
            return f"the upstream sent invalid JSON: {data[:200]!r}"
        if isinstance(obj, dict) and "error" in obj:
            return error_message(obj)
    return None


async def whole_ollama_answer(upstream: Upstream, response: httpx.Response, path: str) -> Any:
    """An Ollama upstream's answer to a request sent with `stream: false` (an OpenAI one converted): its JSON body,
    or, when it streamed all the same, its lines put back together into the final object Ollama would have sent.
    A stream with an error line or without its done line is an UpstreamBadAnswer (502)."""
    if not response.headers.get("content-type", "").startswith("application/x-ndjson"):
        return await read_json(upstream, response)
    raw = await upstream.read_body(response)  # held whole, within --max-upstream-body, as a JSON body would be
    error = _stream_error(raw, "ollama")
    answer = capture(KINDS[path], raw, "application/x-ndjson") if error is None else None
    if answer is None:
        raise UpstreamBadAnswer(upstream.url, error or _ENDED_EARLY)
    return answer
