"""Embedding routes: /v1/embeddings (OpenAI), /api/embed and the older /api/embeddings (Ollama).

Routed by model name like every other request: an upstream model gets the body as sent (converted
when the upstream speaks the other API). A native model answers 400 until the engine computes
embeddings.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from velollm.api import protocol_ollama, protocol_openai
from velollm.api.handler import AppState, Call, endpoint, forward, read_json, route
from velollm.api.registry import UpstreamTarget
from velollm.errors import InvalidRequest
from velollm.wire.errors import is_openai_path


async def _embed(request: Request, state: AppState, call: Call) -> Response:
    body = await read_json(request)
    protocol = protocol_openai if is_openai_path(request.url.path) else protocol_ollama
    target = await route(request, state, call, protocol.model_of(body), body.get("keep_alive"))
    if isinstance(target, UpstreamTarget):
        return await forward(request, state, call, target, body)
    raise InvalidRequest(f'"{target.model.name}" does not support embeddings', param="model")


def routes() -> list[Route]:
    return [Route(path, endpoint(path)(_embed), methods=["POST"])
            for path in ("/v1/embeddings", "/api/embed", "/api/embeddings")]
