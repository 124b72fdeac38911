"""What the proxy does with any upstream answer, whichever way it is converted: read it as JSON, pass
an error status on in the client's shape, stream it with the upstream response closed at the end, send
an embedding request."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from velollm.proxy.upstream import Upstream, UpstreamBadAnswer
from velollm.wire.errors import Api, APIError, error_message, error_response
from velollm.wire.streaming import streaming_response


def error_answer(api: Api, status: int, message: str, param: str | None = None) -> Response:
    """`message` as an error answer in `api`'s wire format (`param`: the request field it is about, for OpenAI's)."""
    return error_response(api, APIError(status, message, param=param))


def streaming(body: AsyncIterator[bytes], upstream_response: httpx.Response, media_type: str) -> StreamingResponse:
    # The body's `finally` closes the upstream response, but a client gone before the first chunk
    # means the body never starts: the background task closes it then (closing twice is harmless).
    return streaming_response(body, media_type, background=BackgroundTask(upstream_response.aclose))


async def read_json(upstream: Upstream, response: httpx.Response) -> Any:
    data = await upstream.read_body(response)
    try:
        return json.loads(data)
    except ValueError as exc:
        raise UpstreamBadAnswer(upstream.url, f"invalid JSON: {data[:200]!r}") from exc


# Headers of an upstream's error that tell the client when to try again (a 429 of a hosted API, the 503 of a
# full queue: Ollama's, VeloLLM's own): the openai SDK waits what they say before its retry.
RETRY_HEADERS = ("retry-after", "retry-after-ms")


async def converted_error(upstream: Upstream, response: httpx.Response, api: Api) -> Response:
    """An upstream error status passed on in the client's error shape: a body already in that shape as
    it is; any other (the other API's, HTML, broken JSON) turned into it, its text as the message. Its
    Retry-After goes along."""
    answer = await _error_body(upstream, response, api)
    for name in RETRY_HEADERS:
        if name in response.headers:
            answer.headers[name] = response.headers[name]
    return answer


async def _error_body(upstream: Upstream, response: httpx.Response, api: Api) -> Response:
    data = await upstream.read_body(response)
    try:
        body = json.loads(data)
    except ValueError:
        text = data.decode("utf-8", "replace").strip()
        if text.startswith("<"):  # an error page of a server or proxy in front of the upstream
            text = "(an HTML page)"
        return error_answer(api, response.status_code, f"upstream answered {response.status_code}: {text[:500]}"
                             if text else f"upstream answered {response.status_code}")
    error = body.get("error") if isinstance(body, dict) else None
    if (isinstance(error, dict) and isinstance(error.get("message"), str)) if api == "openai" else isinstance(error, str):
        return Response(data, status_code=response.status_code, media_type="application/json")
    return error_answer(api, response.status_code, error_message(body))


async def embed(upstream: Upstream, path: str, body: dict[str, Any], inputs: Any, api: Api) -> Any:
    """An embedding request sent upstream (`path`): its parsed answer, or its error in `api`'s shape."""
    converted: dict[str, Any] = {"model": body.get("model"), "input": inputs}
    if body.get("dimensions"):
        converted["dimensions"] = body["dimensions"]
    response = await upstream.send("POST", path, json_body=converted)
    if response.status_code != 200:
        return await converted_error(upstream, response, api)
    return await read_json(upstream, response)
