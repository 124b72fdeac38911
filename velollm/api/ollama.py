"""Ollama-compatible generation routes: /api/generate and /api/chat (NDJSON streaming by default)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from velollm.api import ollama_template
from velollm.api.chat_messages import developer_as_system, with_model_preamble
from velollm.api.context_fit import (
    context_headers,
    cut_long_prompt,
    fit_chat,
    fit_token_prompt,
    ollama_overflow,
)
from velollm.api.debug_render import debug_render
from velollm.api.generation import EngineCall, GenerationStream, engine_params
from velollm.api.handler import (
    STATUS_CLIENT_CLOSED,
    AppState,
    Call,
    Handler,
    NativeHandler,
    endpoint,
    forward,
    forward_or_local,
    observe,
    parse_off_loop,
    read_json,
    route,
)
from velollm.api.keep_alive import is_unload
from velollm.api.logprobs import LogprobFormatter
from velollm.api.model_options import model_options
from velollm.api.native_chat import chat_renderer, render_chat
from velollm.api.ollama_format import OllamaFormatter
from velollm.api.protocol_ollama import (
    ChatRequest,
    GenerateRequest,
    OllamaSampling,
    collate,
    model_of,
    parse_chat_request,
    parse_generate_request,
    sampling_from_options,
)
from velollm.api.served_model import ServedModel
from velollm.api.targets import UpstreamTarget
from velollm.api.thinking import Thinking, think_plan
from velollm.api.tool_calls import ToolCalls, check_tools_capability
from velollm.api.turn_prefill import remember_turn
from velollm.context.token_cut import answer_room
from velollm.errors import ContextOverflow, InvalidRequest
from velollm.output_budget import fit_max_tokens
from velollm.wire.disconnect import cancel_on_disconnect
from velollm.wire.errors import ollama_stream_error, to_api_error
from velollm.wire.framing import NDJSON_MEDIA_TYPE, ndjson_line
from velollm.wire.streaming import streaming_response
from velollm.wire.timestamps import now_rfc3339

if TYPE_CHECKING:
    from velollm.engine.loader.source import ModelInfo
    from velollm.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


def _routed(chat: bool) -> Callable[[NativeHandler], Handler]:
    """handler.routed with Ollama's load-only requests: the body is routed by its model name first (an
    upstream model gets it as sent: the upstream judges images, think, format, options); for a native
    model an empty prompt / messages loads it (keep_alive 0, `ollama stop`: unloads it) and answers
    at once, anything else runs the handler with the body parsed by the native rules."""

    def wrap(fn: NativeHandler) -> Handler:
        async def handler(request: Request, state: AppState, call: Call) -> Response:
            body = await read_json(request)
            has_input = bool(body.get("messages" if chat else "prompt"))
            served = await _served_or_answer(request, state, call, body, has_input, chat)
            if isinstance(served, Response):
                return served
            req = await parse_off_loop(parse_chat_request if chat else parse_generate_request, body)
            if chat and req.tools:  # Ollama checks the capabilities first: tools and no messages is its 400 too
                check_tools_capability(served.engine.tokenizer, req.model)
            if not (req.messages if chat else req.prompt):
                return _load_response(req.model, chat, req.keep_alive_s)  # Ollama answers the name as sent
            return await fn(request, state, call, req, served)

        handler.__name__ = fn.__name__
        return handler

    return wrap


async def _served_or_answer(request: Request, state: AppState, call: Call, body: dict[str, Any],
                            has_input: bool, chat: bool) -> Response | ServedModel:
    """The native model a generate/chat request names, or the upstream's or the unload answer."""
    name = model_of(body)
    if not has_input and is_unload(body.get("keep_alive")):
        call.model = name
        if state.router is not None and state.router.handles(name):
            # The virtual model holds no weights; the models it routes to are served under their own
            # names, maybe busy with other clients: `ollama stop` them by name (velollm/complexity).
            return _load_response(name, chat, 0)
        target = await state.models.describe(name)  # unloading never loads the model first
        if isinstance(target, UpstreamTarget):
            return await forward(request, state, call, target, body)
        await state.models.unload(target.model)
        return _load_response(name, chat, 0)
    target = await route(request, state, call, name, body.get("keep_alive"), body=body)
    if isinstance(target, UpstreamTarget):
        return await forward_or_local(request, state, call, target, body)
    return target.model


def _load_response(model: str, chat: bool, keep_alive_s: float | None) -> Response:
    out: dict[str, Any] = {"model": model, "created_at": now_rfc3339()}
    if chat:
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    out.update(done=True, done_reason="unload" if keep_alive_s == 0 else "load")
    return JSONResponse(out)


def _strip_bos(tokenizer: Any, ids: list[int]) -> list[int]:
    bos = getattr(tokenizer, "bos_token_id", None)
    return ids[1:] if ids and bos is not None and ids[0] == bos else ids


def _generate_prompt_text(tokenizer: Any, req: GenerateRequest, info: ModelInfo, template_kwargs: dict[str, Any],
                          insert: str | None = None) -> tuple[str, bool]:
    """The prompt's text, and whether the tokenizer adds its special tokens to it (a chat template writes
    its own). `insert`: the model's fill-in-the-middle template, for a request with a suffix."""
    system = req.system if req.system is not None else info.default_system
    if req.raw:
        return req.prompt, True
    if insert is not None:
        return ollama_template.render_insert(req.template or insert, req.prompt, req.suffix, template_kwargs), True
    # Ollama's order: the system prompt, the model's MESSAGE history (not when continuing a `context`), the prompt
    messages = ([{"role": "system", "content": system}] if system else []) + (
        [] if req.context else list(info.default_messages)) + [{"role": "user", "content": req.prompt}]
    if req.template:
        return ollama_template.render(req.template, messages, template_kwargs), True
    return render_chat(tokenizer, messages, template_kwargs), False


def _generate_prompt_ids(tokenizer: Any, text: str, add_special_tokens: bool, req: GenerateRequest) -> list[int]:
    ids = tokenizer.encode(text, add_special_tokens=add_special_tokens)
    # `context` (deprecated) is the previous turn's prompt + response tokens, continued here.
    return list(req.context) + _strip_bos(tokenizer, ids) if req.context else ids


def _ollama_calls(calls: Any, first_index: int = 0) -> tuple[list[dict[str, Any]], str]:
    """Calls as Ollama sends them (id, index in the answer from `first_index`, arguments as objects); one whose
    arguments do not parse (a stream cut mid-call) goes back into the content rather than being dropped."""
    out: list[dict[str, Any]] = []
    text = ""
    for c in calls:
        try:
            out.append(c.to_ollama(first_index + len(out)))
        except ValueError:
            text += c.arguments
    return out, text


def _end_ids(engine: Any, params: SamplingParams) -> frozenset[int]:
    """The ids that end an answer, left out of its context and logprobs (velollm/api/context_answer.py)."""
    return (frozenset(engine.model_config.eos_token_ids) | engine.tokenizer.eos_token_ids
            | frozenset(params.stop_token_ids or ()))


async def _ndjson(gen: GenerationStream, fmt: OllamaFormatter, state: AppState, call: Call,
                  tools: ToolCalls | None = None) -> AsyncIterator[bytes]:
    status = STATUS_CLIENT_CLOSED
    tool_stream = tools.stream() if tools is not None else None
    calls_sent = 0
    try:
        try:
            async for index, delta in gen:
                tool_calls = None
                if tool_stream is not None:
                    piece = tool_stream.feed(index, delta)
                    tool_calls, stray = _ollama_calls(piece.new_calls, calls_sent)
                    calls_sent += len(tool_calls)
                    delta = replace(piece.delta, text=piece.delta.text + stray)
                chunk = fmt.chunk(delta, tool_calls, gen.choices[index])
                if chunk is not None:
                    yield ndjson_line(chunk)
            yield ndjson_line(fmt.final(gen.choices[0]))
            status = 200
        except Exception as exc:  # noqa: BLE001 (output started: one more line with the error, status stays 200)
            err = to_api_error(exc)
            status = err.status
            yield ndjson_line(ollama_stream_error(err))
    finally:
        await gen.aclose()
        observe(state, call, gen.choices[:1], status)


async def _run(request: Request, state: AppState, call: Call, engine: Any, prompt_ids: list[int], params: Any,
               fmt: OllamaFormatter, stream: bool, tools: ToolCalls | None = None,
               thinking: Thinking | None = None, on_gen: Callable[[GenerationStream], None] | None = None) -> Response:
    gen = GenerationStream(engine, [EngineCall(prompt_ids, params)], f"ollama-{uuid.uuid4().hex}", thinking)
    if on_gen is not None:
        on_gen(gen)
    await cancel_on_disconnect(request.receive, gen.start())
    call.records_itself = True
    if stream:
        return streaming_response(_ndjson(gen, fmt, state, call, tools), NDJSON_MEDIA_TYPE)
    try:
        answers = None
        if tools is None:
            [choice] = await cancel_on_disconnect(request.receive, gen.collect())
        else:
            answers = await cancel_on_disconnect(request.receive, tools.answers(gen))
            [choice] = gen.choices
    except BaseException:
        call.records_itself = False
        raise
    finally:
        await gen.aclose()
    observe(state, call, [choice], 200)
    if answers is None:
        return JSONResponse(fmt.final(choice, choice.text, with_logprobs=True, thinking=choice.reasoning))
    tool_calls, stray = _ollama_calls(answers[0].calls)
    return JSONResponse(fmt.final(choice, answers[0].content + stray, with_logprobs=True, tool_calls=tool_calls,
                                  thinking=choice.reasoning))


def _options(served: Any, req: GenerateRequest | ChatRequest) -> OllamaSampling:
    info = served.engine.source.info
    defaults = model_options(served.name, info.default_options, info.layer_error)
    return sampling_from_options(req.options, defaults, req.format,
                                 req.top_logprobs if req.logprobs else None)


MIN_NUM_CTX = 4  # Ollama's scheduler raises a smaller num_ctx to 4 (server/sched.go)


def _context_len(served: Any, sampling: OllamaSampling, shift: bool) -> int:
    """The model's context, or the smaller `num_ctx` the request asks for (at least 4, as in Ollama).

    With `shift: false` Ollama's runner holds `num_ctx` ids and still samples one token after them (the last
    token never enters its cache) before it ends the sequence with done_reason "length": a prompt of the whole
    context runs and gets one token, and a shorter one `num_ctx - prompt + 1` (token_cut.answer_room). VeloLLM's engine
    holds that last token too, so this context is then at most the model's less one."""
    context = served.engine.max_model_len
    context = min(context, max(MIN_NUM_CTX, sampling.num_ctx)) if sampling.num_ctx else context
    return context if shift else min(context, served.engine.max_model_len - 1)


def _sampling(served: Any, req: GenerateRequest | ChatRequest, prompt_len: int):
    sampling = _options(served, req)
    room = answer_room(_context_len(served, sampling, req.shift), req.shift)
    try:
        max_tokens = fit_max_tokens(prompt_len, sampling.params.max_tokens, room, "prompt")
    except ContextOverflow as e:  # the error mode (`truncate: false`): Ollama's words
        raise ollama_overflow(e) from None
    return engine_params(sampling.params, max_tokens, stream=req.stream)


@endpoint("/api/generate")
@_routed(chat=False)
async def generate(request: Request, state: AppState, call: Call, req: GenerateRequest, served: ServedModel) -> Response:
    t_loaded = time.perf_counter()
    engine = served.engine
    info = engine.source.info
    insert = ollama_template.insert_template(engine.tokenizer) if req.suffix else None
    if req.suffix and insert is None:  # Ollama's capability check, on the model's own template
        raise InvalidRequest(f'"{req.model}" does not support insert', param="suffix")
    plan = think_plan(engine.tokenizer, req.think, served.name, strict=True)
    text, add_special_tokens = await asyncio.to_thread(_generate_prompt_text, engine.tokenizer, req, info,
                                                       plan.template_kwargs, insert)
    options = _options(served, req)
    fit = {"requested": req.context_overflow, "context_len": _context_len(served, options, req.shift),
           "max_tokens": options.params.max_tokens, "num_keep": req.num_keep, "shift": req.shift}
    try:
        prompt_ids = await asyncio.to_thread(_generate_prompt_ids, engine.tokenizer, text, add_special_tokens, req)
    except ContextOverflow as e:  # too long to tokenize (for sure over the context): its ends are cut
        prompt_ids, report = await asyncio.to_thread(cut_long_prompt, state, served, text, e, **fit,
                                                     add_special_tokens=add_special_tokens, prefix_ids=req.context)
        full_ids = prompt_ids
    else:
        full_ids = prompt_ids
        prompt_ids, report = fit_token_prompt(state, served, prompt_ids, len(prompt_ids) - len(req.context or ()),
                                              **fit)
    if req.debug_render_only:
        return debug_render(req.model, False, engine.tokenizer, prompt_ids)
    thinking = Thinking.for_prompt(plan, engine.tokenizer, prompt_ids)
    params = _sampling(served, req, len(prompt_ids))
    if thinking is not None:
        params = thinking.constrain(params)
    logprobs = LogprobFormatter(engine.tokenizer, req.top_logprobs) if req.logprobs else None
    fmt = OllamaFormatter(req.model, False, call, t_loaded, prompt_ids, not req.raw, logprobs, full_ids,
                          _end_ids(engine, params), engine.tokenizer)
    response = await _run(request, state, call, engine, prompt_ids, params, fmt, req.stream, thinking=thinking)
    response.headers.update(context_headers(report))
    return response


@endpoint("/api/chat")
@_routed(chat=True)
async def chat(request: Request, state: AppState, call: Call, req: ChatRequest, served: ServedModel) -> Response:
    t_loaded = time.perf_counter()
    engine = served.engine
    info = engine.source.info
    # `developer` as on /v1 (an OpenAI client's instructions reach /api/chat through a proxy's translation),
    # collated again: beside a system message it is one system message
    messages = collate(developer_as_system(req.messages, getattr(engine.tokenizer, "chat_template", None)))
    messages = with_model_preamble(messages, info.default_system, info.default_messages)
    plan = think_plan(engine.tokenizer, req.think, served.name, strict=True)
    tools = None
    if req.tools:  # Ollama has no tool_choice: the model picks text or calls ("auto")
        tools = ToolCalls(engine, req.tools, "auto", True, retries=state.config.tool_retries, metrics=state.metrics,
                          model=served.name, template_kwargs=plan.template_kwargs)
    options = _options(served, req)
    context_len = _context_len(served, options, req.shift)
    render = chat_renderer(engine.tokenizer, tools, plan.template_kwargs)
    fitted = await fit_chat(state, served, messages, render,
                            api="ollama", requested=req.context_overflow, context_len=context_len,
                            max_tokens=options.params.max_tokens, num_keep=req.num_keep, shift=req.shift)
    if tools is not None:
        tools.use_fitted(fitted, context_len)
    prompt_ids = fitted.token_ids
    if req.debug_render_only:
        return debug_render(req.model, True, engine.tokenizer, prompt_ids)
    thinking = Thinking.for_prompt(plan, engine.tokenizer, prompt_ids)
    params = _sampling(served, req, len(prompt_ids))
    if tools is not None:
        params = tools.params(params)
    if thinking is not None:
        params = thinking.constrain(params)
    logprobs = LogprobFormatter(engine.tokenizer, req.top_logprobs) if req.logprobs else None
    fmt = OllamaFormatter(req.model, True, call, t_loaded, prompt_ids, False, logprobs,
                          end_ids=_end_ids(engine, params), tokenizer=engine.tokenizer)
    response = await _run(request, state, call, engine, prompt_ids, params, fmt, req.stream, tools, thinking,
                          on_gen=lambda gen: remember_turn(state, served, gen, fitted, render, tools))
    response.headers.update(context_headers(fitted))
    return response


def routes() -> list[Route]:
    return [Route("/api/generate", generate, methods=["POST"]), Route("/api/chat", chat, methods=["POST"])]
