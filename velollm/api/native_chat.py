"""NativeChat: an OpenAI chat request on a native model, ready to run (for /v1/chat/completions and
/v1/responses): the prompt through the chat template (thinking mode and tools included), the
sampling params (grammars start after the thinking), the generation stream and its formatter."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from velollm.api.chat_messages import apply_template, continue_final, developer_as_system, with_model_preamble
from velollm.api.context_fit import fit_chat
from velollm.api.generation import EngineCall, GenerationStream, check_queue_fits, engine_params
from velollm.api.handler import AppState
from velollm.api.openai_format import ChatFormatter, CompletionFormatter
from velollm.api.protocol_openai import ChatCompletionRequest
from velollm.api.served_model import ServedModel
from velollm.api.thinking import Thinking, think_plan
from velollm.api.tool_calls import ToolCalls
from velollm.api.turn_prefill import remember_turn
from velollm.context.fitter import FittedPrompt, Render
from velollm.output_budget import fit_max_tokens
from velollm.reasoning import ThinkPlan
from velollm.wire.disconnect import cancel_on_disconnect


def render_chat(tokenizer: Any, messages: list[dict[str, Any]], template_kwargs: dict[str, Any]) -> str:
    return apply_template(tokenizer.apply_chat_template, messages, **template_kwargs)


def encode_chat(tokenizer: Any, messages: list[dict[str, Any]], template_kwargs: dict[str, Any]) -> list[int]:
    return tokenizer.encode(render_chat(tokenizer, messages, template_kwargs), add_special_tokens=False)


def chat_renderer(tokenizer: Any, tools: ToolCalls | None, template_kwargs: dict[str, Any],
                  continue_final_message: bool = False) -> Render:
    """messages -> prompt text: through the tools' rendering when the request has tools; cut after the
    final message's content when that message is to be continued."""
    def render(messages: list[dict[str, Any]]) -> str:
        text = tools.prompt_text(messages) if tools is not None else render_chat(tokenizer, messages, template_kwargs)
        return continue_final(text, messages) if continue_final_message else text

    return render  # type: ignore[return-value]


@dataclass
class NativeChat:
    gen: GenerationStream
    fmt: ChatFormatter
    tools: ToolCalls | None
    stream: bool
    max_tokens: int  # each choice's budget: the request's max_tokens clamped to what the context leaves
    context: FittedPrompt | None = None


@dataclass
class ChatPrompt:
    """A chat request's prompt on a native model, fitted to its context: what it runs, and what
    /v1/responses/input_tokens counts without running it."""
    plan: ThinkPlan
    tools: ToolCalls | None
    params: Any  # the request's SamplingParams, the tools' constraints applied
    render: Render
    fitted: FittedPrompt


async def chat_prompt(state: AppState, served: ServedModel, req: ChatCompletionRequest,
                      counting: bool = False) -> ChatPrompt:
    """The prompt the request runs with: the chat template (thinking mode, tools, the model's preamble),
    fitted to the context per the request's overflow mode (`counting`: only to count it, context_fit.fit_chat)."""
    engine = served.engine
    tokenizer = engine.tokenizer
    plan = think_plan(tokenizer, req.think, served.name, strict=False)  # reasoning_effort: accepted anywhere
    if not req.include_reasoning:
        plan = replace(plan, return_reasoning=False)
    template_kwargs = {"add_generation_prompt": req.add_generation_prompt, **plan.template_kwargs,
                       **req.chat_template_kwargs}
    tools, params = None, req.params
    if req.tool_config.tools:
        tc = req.tool_config
        tools = ToolCalls(engine, tc.tools, tc.tool_choice, tc.parallel_tool_calls, retries=state.config.tool_retries,
                          metrics=state.metrics, model=served.name, template_kwargs=template_kwargs)
        params = tools.params(req.params)
    info = engine.source.info
    messages = with_model_preamble(developer_as_system(req.messages, getattr(tokenizer, "chat_template", None)),
                                   info.default_system, info.default_messages)
    render = chat_renderer(tokenizer, tools, template_kwargs, req.continue_final_message)
    fitted = await fit_chat(state, served, messages, render, api="openai", requested=req.context_overflow,
                            context_len=engine.max_model_len, max_tokens=params.max_tokens, counting=counting)
    if tools is not None:
        tools.use_fitted(fitted, engine.max_model_len)
    return ChatPrompt(plan, tools, params, render, fitted)


async def prepare_chat(state: AppState, served: ServedModel, req: ChatCompletionRequest) -> NativeChat:
    engine = served.engine
    tokenizer = engine.tokenizer
    check_queue_fits(engine, req.params.n, "n")
    prompt = await chat_prompt(state, served, req)
    plan, tools, params, render, fitted = prompt.plan, prompt.tools, prompt.params, prompt.render, prompt.fitted
    prompt_ids = fitted.token_ids
    thinking = Thinking.for_prompt(plan, tokenizer, prompt_ids)
    if thinking is not None:
        params = thinking.constrain(params)
    max_tokens = fit_max_tokens(len(prompt_ids), params.max_tokens, engine.max_model_len, "messages")
    calls = [EngineCall(prompt_ids, engine_params(params, max_tokens, i, stream=req.stream.stream))
             for i in range(params.n)]
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    # the name as the request spelled it (Ollama echoes req.Model): an on-demand "m" answers "m", not "m:latest"
    fmt = ChatFormatter(request_id, req.model, int(time.time()), tokenizer, req.top_logprobs,
                        req.stream.include_usage, req.stream.continuous_usage, [len(prompt_ids)],
                        want_logprobs=req.logprobs, reasoning=thinking is not None,
                        legacy_functions=req.legacy_functions, prompt_logprobs=req.prompt_logprobs,
                        echo=_echo(req) if req.echo else "", tokens_as_ids=req.tokens_as_ids)
    gen = GenerationStream(engine, calls, request_id, thinking)
    # a continued final message has no next turn to tell
    remember_turn(state, served, gen, fitted, None if req.continue_final_message else render, tools)
    return NativeChat(gen, fmt, tools, req.stream.stream, max_tokens, fitted)


def _echo(req: ChatCompletionRequest) -> str:
    """vLLM's chat echo: the last message's text when its role is the answer's (assistant, or the last role
    itself without a generation prompt), as with continue_final_message; otherwise nothing."""
    last = req.messages[-1]
    role = "assistant" if req.add_generation_prompt else last.get("role")
    if last.get("role") != role:
        return ""
    content = last.get("content")
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content if isinstance(content, str) else ""


async def stream_chunks(gen: GenerationStream, fmt: ChatFormatter | CompletionFormatter,
                        tools: ToolCalls | None = None) -> AsyncIterator[dict[str, Any]]:
    """The chunks of a streamed answer (tool calls parsed as they come), then the usage chunk if asked."""
    tool_stream = tools.stream() if tools is not None else None
    async for index, delta in gen:
        if tool_stream is None:
            chunks = fmt.stream_chunks(index, delta, gen.choices)
        else:
            piece = tool_stream.feed(index, delta)
            chunks = fmt.stream_chunks(index, piece.delta, gen.choices,  # type: ignore[call-arg]
                                       [d.to_openai() for d in piece.call_deltas])
        for chunk in chunks:
            yield chunk
    if fmt.include_usage:
        yield fmt.usage_chunk(gen.choices)


async def whole_body(receive: Callable[[], Awaitable[Any]], gen: GenerationStream, fmt: Any,
                     tools: ToolCalls | None = None) -> dict[str, Any]:
    """The whole answer (tool calls parsed, repaired and retried); a client that leaves cancels it."""
    if tools is None:
        return fmt.response(await cancel_on_disconnect(receive, gen.collect()))
    answers = await cancel_on_disconnect(receive, tools.answers(gen))
    return fmt.response(gen.choices, answers)
