"""Embedding routes: /v1/embeddings (OpenAI), /api/embed and the older /api/embeddings (Ollama).

Routed by model name like every other request: an upstream model gets the body as sent (converted
when the upstream speaks the other API); a native embedding model (velollm.embed, loaded on demand
with keep_alive) computes the vectors; a native generation model answers 400.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from velollm.api import embedding_format, embedding_request, protocol_ollama, protocol_openai
from velollm.api.handler import AppState, Call, endpoint, forward, forward_or_local, read_json, route
from velollm.api.keep_alive import is_unload
from velollm.api.served_model import ServedModel
from velollm.api.targets import UpstreamTarget
from velollm.errors import InvalidRequest
from velollm.wire.errors import is_openai_path

_PARSERS = {"/v1/embeddings": embedding_request.parse_openai, "/api/embed": embedding_request.parse_ollama_embed,
            "/api/embeddings": embedding_request.parse_ollama_legacy}


async def _embed(request: Request, state: AppState, call: Call) -> Response:
    body = await read_json(request)
    path = request.url.path
    protocol = protocol_openai if is_openai_path(path) else protocol_ollama
    if path != "/v1/embeddings" and is_unload(body.get("keep_alive")) and not _PARSERS[path](body).num_inputs:
        return await _unload(request, state, call, body)
    name = protocol.model_of(body)  # answered as the request spelled it, as Ollama answers (req.Model)
    target = await route(request, state, call, name, body.get("keep_alive"))
    served = await forward_or_local(request, state, call, target, body) \
        if isinstance(target, UpstreamTarget) else target.model
    if not isinstance(served, ServedModel):
        return served  # the upstream's answer
    engine = served.engine
    if not getattr(engine, "is_embedding", False):
        raise InvalidRequest(f'"{name}" does not support embeddings', param="model")
    t_loaded = time.perf_counter()
    req = _PARSERS[path](body)
    legacy = path == "/api/embeddings"  # Ollama returns this one's vector as the model computed it, not normalised
    vectors, num_tokens = await _vectors(engine, req, raw=legacy)
    vectors = embedding_format.fit_dimensions(vectors, req.dimensions, engine.source.pooling.normalize and not legacy)
    if path == "/v1/embeddings":
        return JSONResponse(embedding_format.openai_body(name, vectors, num_tokens, req.encoding_format))
    if legacy:
        return JSONResponse({"embedding": vectors[0].tolist() if len(vectors) else []})
    return JSONResponse(embedding_format.ollama_embed_body(name, vectors, num_tokens, call.elapsed(),
                                                           t_loaded - call.t0))


async def _unload(request: Request, state: AppState, call: Call, body: dict[str, Any]) -> Response:
    """An Ollama request with no input and keep_alive 0: unload the model, never load it first."""
    call.model = protocol_ollama.model_of(body)
    target = await state.models.describe(call.model)
    if isinstance(target, UpstreamTarget):
        return await forward(request, state, call, target, body)
    await state.models.unload(target.model)
    if request.url.path == "/api/embeddings":
        return JSONResponse({"embedding": []})
    return JSONResponse({"model": call.model, "embeddings": []})


async def _vectors(engine: Any, req: embedding_request.EmbedRequest, raw: bool) -> tuple[Any, int]:
    keep_last = _keep_last(engine, req)
    if req.token_ids is not None:
        ids = req.token_ids if keep_last is None else [seq[-keep_last:] for seq in req.token_ids]
    else:
        ids = await engine.tokenize(req.texts or [], req.truncate, keep_last, req.add_special_tokens)
    vectors = await engine.embed_ids(ids, raw=raw)
    return vectors, sum(len(s) for s in ids)


def _keep_last(engine: Any, req: embedding_request.EmbedRequest) -> int | None:
    """vLLM's truncate_prompt_tokens as a count: -1 is the model's length; more than it is vLLM's 400."""
    if req.keep_last == -1:
        return engine.max_model_len
    if req.keep_last is not None and req.keep_last > engine.max_model_len:
        raise InvalidRequest(f"truncate_prompt_tokens value ({req.keep_last}) is greater than the model's context "
                             f"length ({engine.max_model_len}); select a smaller truncation size",
                             param="truncate_prompt_tokens")
    return req.keep_last


def routes() -> list[Route]:
    return [Route(path, endpoint(path)(_embed), methods=["POST"]) for path in _PARSERS]
