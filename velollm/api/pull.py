"""POST /api/pull: handed to the Ollama upstream, whose NDJSON progress streams back as it comes.

VeloLLM never downloads a model itself: without an upstream, or with an OpenAI-compatible one, a pull
is an error that says so.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from velollm.api.handler import AppState, Call, endpoint, read_json
from velollm.errors import InvalidRequest
from velollm.wire.errors import APIError


@endpoint("/api/pull")
async def pull(request: Request, state: AppState, call: Call) -> Response:
    body = await read_json(request)
    name = body.get("model") or body.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("model is required", param="model")
    call.model = name
    upstream = state.models.upstream
    if upstream is None:
        raise APIError(501, "VeloLLM does not download models: start `velollm serve` with an Ollama upstream "
                            "(--upstream or $OLLAMA_HOST) to pull through it")
    return await upstream.forward(request, body)


def routes() -> list[Route]:
    return [Route("/api/pull", pull, methods=["POST"])]
