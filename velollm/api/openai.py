"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models[/{id}] (the stored chat
completions' routes are stored_chat.py's)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from velollm.api import ollama_template
from velollm.api.completion_prompts import prompt_ids as completion_prompt_ids
from velollm.api.context_fit import context_headers
from velollm.api.generation import EngineCall, GenerationStream, check_queue_fits, engine_params
from velollm.api.handler import (
    STATUS_CLIENT_CLOSED,
    AppState,
    Call,
    endpoint,
    forward_or_local,
    observe,
    parse_off_loop,
    read_json,
    route,
    routed,
)
from velollm.api.native_chat import prepare_chat, stream_chunks, whole_body
from velollm.api.ollama_models import listing
from velollm.api.openai_defaults import with_model_defaults
from velollm.api.openai_format import ChatFormatter, CompletionFormatter
from velollm.api.protocol_openai import (
    ChatCompletionRequest,
    CompletionRequest,
    model_of,
    parse_chat_request,
    parse_completion_request,
)
from velollm.api.served_model import ServedModel
from velollm.api.stored_chat import keeper
from velollm.api.targets import UpstreamTarget
from velollm.api.tool_calls import ToolCalls
from velollm.api.virtual_model import openai_card, with_virtual
from velollm.errors import InvalidRequest, ModelNotFound
from velollm.output_budget import fit_max_tokens
from velollm.wire.disconnect import cancel_on_disconnect
from velollm.wire.errors import openai_error_body, to_api_error
from velollm.wire.framing import SSE_DONE, SSE_MEDIA_TYPE, sse_event
from velollm.wire.names import name_key
from velollm.wire.streaming import streaming_response

logger = logging.getLogger(__name__)


def _insert_ids(tokenizer: Any, req: CompletionRequest, model: str) -> list[list[int]]:
    """Fill-in-the-middle prompts, as Ollama's /v1/completions makes them: each prompt and the suffix rendered by
    the model's TEMPLATE layer that names .Suffix (its insert capability), tokenized as its runner does (the
    BOS). The prompts are text (the request's check)."""
    layer = ollama_template.insert_template(tokenizer)
    if layer is None:
        raise InvalidRequest(f"suffix is not supported by {model}: its template has no fill-in-the-middle form "
                             "(an Ollama TEMPLATE layer naming .Suffix)", param="suffix")
    return [tokenizer.encode(ollama_template.render_insert(layer, str(p), req.suffix), add_special_tokens=True)
            for p in req.prompts]


async def _sse(gen: GenerationStream, fmt: ChatFormatter | CompletionFormatter, state: AppState,
               call: Call, tools: ToolCalls | None = None) -> AsyncIterator[bytes]:
    status = STATUS_CLIENT_CLOSED
    try:
        try:
            async for chunk in stream_chunks(gen, fmt, tools):
                yield sse_event(chunk)
            status = 200
        except Exception as exc:  # noqa: BLE001 (the 200 went out: any failure goes in-band, as the SDK expects)
            err = to_api_error(exc)
            status = err.status
            yield sse_event(openai_error_body(err))
        yield SSE_DONE
    finally:
        await gen.aclose()
        observe(state, call, gen.choices, status)


async def _run(request: Request, state: AppState, call: Call, gen: GenerationStream, fmt: Any,
               stream: bool, tools: ToolCalls | None = None) -> Response:
    await cancel_on_disconnect(request.receive, gen.start())
    if stream:
        call.records_itself = True
        return streaming_response(_sse(gen, fmt, state, call, tools), SSE_MEDIA_TYPE)
    try:
        body = await whole_body(request.receive, gen, fmt, tools)
    finally:
        await gen.aclose()
    response = JSONResponse(body)
    observe(state, call, gen.choices, 200)
    call.records_itself = True
    return response


@endpoint("/v1/chat/completions")
async def chat_completions(request: Request, state: AppState, call: Call) -> Response:
    """Routed by model first; with `store: true` the answer (native or upstream) is stored as it goes out."""
    body = await read_json(request)
    target = await route(request, state, call, model_of(body), body=body)
    keep = keeper(state, body)
    if isinstance(target, UpstreamTarget):
        answer = await forward_or_local(request, state, call, target, body)
        if not isinstance(answer, ServedModel):
            return await keep.keep(answer, relayed=True) if keep is not None else answer
        served = answer
    else:
        served = target.model
    req = await parse_off_loop(parse_chat_request, with_model_defaults(body, served))
    response = await _native_chat(request, state, call, req, served)
    return await keep.keep(response) if keep is not None else response


async def _native_chat(request: Request, state: AppState, call: Call, req: ChatCompletionRequest,
                       served: ServedModel) -> Response:
    chat = await prepare_chat(state, served, req)
    response = await _run(request, state, call, chat.gen, chat.fmt, chat.stream, chat.tools)
    response.headers.update(context_headers(chat.context))
    return response


@endpoint("/v1/completions")
@routed(model_of, parse_completion_request, with_model_defaults)
async def completions(request: Request, state: AppState, call: Call, req: CompletionRequest,
                      served: ServedModel) -> Response:
    engine = served.engine
    tokenizer = engine.tokenizer
    check_queue_fits(engine, len(req.prompts) * req.params.n, "n" if req.params.n > 1 else "prompt")
    keep_last = req.truncate_prompt_tokens
    if keep_last == -1:  # vLLM's "the model's length": the context less one output token
        keep_last = engine.max_model_len - 1
    if req.suffix:
        prompt_ids = await asyncio.to_thread(_insert_ids, tokenizer, req, served.name)
    else:
        prompt_ids = await asyncio.to_thread(
            lambda: [completion_prompt_ids(tokenizer, p, engine.model_config.vocab_size,
                                           add_special_tokens=req.add_special_tokens, keep_last=keep_last)
                     for p in req.prompts])
    calls = []
    for ids in prompt_ids:
        if not ids:
            raise InvalidRequest("prompt must not be empty", param="prompt")
        max_tokens = fit_max_tokens(len(ids), req.params.max_tokens, engine.max_model_len, "prompt")
        calls += [EngineCall(ids, engine_params(req.params, max_tokens, i, stream=req.stream.stream))
                  for i in range(req.params.n)]
    echo_texts = None
    if req.echo:
        # a prompt cut to its last ids echoes what was scored: their text
        echo_texts = [p if isinstance(p, str) and (keep_last is None or len(ids) < keep_last)
                      else tokenizer.decode(ids) for p, ids in zip(req.prompts, prompt_ids)]
    request_id = f"cmpl-{uuid.uuid4().hex}"
    fmt = CompletionFormatter(request_id, req.model, int(time.time()), tokenizer, req.params.logprobs or 0,
                              req.stream.include_usage, req.stream.continuous_usage, [len(p) for p in prompt_ids],
                              want_logprobs=req.params.logprobs is not None, echo_texts=echo_texts, n=req.params.n,
                              skip_special_tokens=req.params.skip_special_tokens, prompt_logprobs=req.prompt_logprobs,
                              tokens_as_ids=req.tokens_as_ids)
    gen = GenerationStream(engine, calls, request_id, keep_output=not req.echo_only)
    return await _run(request, state, call, gen, fmt, req.stream.stream)


def _model_card(name: str, created: float, max_model_len: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(created), "owned_by": "velollm", "root": name,
            "parent": None, "max_model_len": max_model_len}


@endpoint("/v1/models")
async def list_models(request: Request, state: AppState, call: Call) -> Response:
    data = await listing(state, lambda m: _model_card(m.name, m.loaded_at, m.engine.max_model_len), _store_cards,
                         lambda u: u.openai_models(), "id")
    return JSONResponse({"object": "list", "data": with_virtual(openai_card(state), data)})


def _store_cards() -> list[dict[str, Any]]:
    """The Ollama store's models (manifests only: nothing is loaded), as Ollama's /v1/models lists them."""
    from velollm.engine.loader import ollama_store

    return [{"id": m.display_name, "object": "model", "created": int(m.modified_at), "owned_by": "velollm"}
            for m in ollama_store.list_models()]


@endpoint("/v1/models/{model:path}")
async def get_model(request: Request, state: AppState, call: Call) -> Response:
    name = request.path_params["model"]
    call.model = name
    if state.router is not None and state.router.handles(name):
        return JSONResponse(openai_card(state))
    target = await state.models.describe(name)  # a model that is not loaded is described, not loaded
    if isinstance(target, UpstreamTarget):
        cards = [c for c in await state.models.upstream.openai_models()
                 if name_key(c.get("id") or "") == name_key(name)]
        if not cards:
            raise ModelNotFound(f"model '{name}' not found")
        return JSONResponse(cards[0])
    return JSONResponse(_model_card(target.model.name, target.model.loaded_at, target.model.engine.max_model_len))


def routes() -> list[Route]:
    return [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
    ]
