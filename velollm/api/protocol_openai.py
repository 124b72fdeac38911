"""Parsing and validation of OpenAI /v1 requests (chat and completions) into typed requests.

Fields follow OpenAI plus vLLM's top-level extras (what the openai SDK sends in `extra_body`).
`tools`, `tool_choice` and `parallel_tool_calls` are carried on the request (ToolConfig) for
velollm/api/tool_calls.py; `response_format` (or vLLM's `structured_outputs` / `guided_*`, see
velollm/api/vllm_structured.py) becomes SamplingParams.structured_output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from velollm.api.chat_messages import normalize_messages
from velollm.api.features import MAX_N, MAX_PROMPTS, STRUCTURED_OUTPUT_KINDS, TOOL_CHOICES, check_schema
from velollm.api.vllm_structured import vllm_structured_output
from velollm.context.overflow import parse_overflow
from velollm.reasoning import ThinkSetting
from velollm.request_fields import Fields
from velollm.sampling_params import MAX_LOGPROBS, SEED_MAX, SEED_MIN, SamplingParams, StructuredOutput
from velollm.wire.legacy_functions import as_tools


@dataclass(frozen=True)
class ToolConfig:
    """Tool-calling fields as sent (validated); velollm/api/tool_calls.py runs them."""

    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool = True


@dataclass(frozen=True)
class StreamConfig:
    stream: bool = False
    include_usage: bool = False
    continuous_usage: bool = False  # vLLM's stream_options.continuous_usage_stats


@dataclass(frozen=True)
class ChatCompletionRequest:
    model: str
    messages: list[dict[str, Any]]
    params: SamplingParams  # max_tokens None = whatever fits the context
    stream: StreamConfig
    logprobs: bool = False
    top_logprobs: int = 0
    tool_config: ToolConfig = field(default_factory=ToolConfig)
    add_generation_prompt: bool = True
    continue_final_message: bool = False  # vLLM's assistant prefill: the last (assistant) message goes on
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    think: ThinkSetting = field(default_factory=ThinkSetting)  # reasoning_effort / enable_thinking
    include_reasoning: bool = True  # vLLM's switch: false leaves reasoning_content out
    context_overflow: str | None = None  # error | truncate | compress (extra_body); None: the server's
    legacy_functions: bool = False  # the client sent `functions`: the answer's call is a `function_call`
    prompt_logprobs: int | None = None  # vLLM's extra: the prompt's logprobs, top k, on the response
    echo: bool = False  # vLLM's: the last message's content first in the answer, when it is the answer's role
    tokens_as_ids: bool = False  # vLLM's return_tokens_as_token_ids: logprobs' tokens spelt "token_id:N"


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    prompts: list[str | list[int]]
    params: SamplingParams
    stream: StreamConfig
    echo: bool = False
    suffix: str = ""  # fill-in-the-middle, as Ollama's /v1/completions: rendered by the model's TEMPLATE layer
    # echo with max_tokens 0 (lm-evaluation-harness's loglikelihood): the prompt back, nothing generated
    echo_only: bool = False
    prompt_logprobs: int | None = None  # vLLM's extra: the prompt's logprobs, top k, on each choice
    truncate_prompt_tokens: int | None = None  # vLLM's: keep each prompt's last k ids (-1: the model's length)
    add_special_tokens: bool = True  # vLLM's: a text prompt's BOS (and the like)
    tokens_as_ids: bool = False  # vLLM's return_tokens_as_token_ids: logprobs' tokens spelt "token_id:N"


def _stream_config(f: Fields) -> StreamConfig:
    stream = f.bool("stream", False)
    if not f.has("stream_options"):
        return StreamConfig(stream)
    if not stream:
        raise f.bad("stream_options", "is only allowed when stream is true")
    opts = Fields(f.dict("stream_options"), "stream_options.")
    # vLLM's default: once stream_options is given, usage is included unless turned off.
    return StreamConfig(True, opts.bool("include_usage", True), opts.bool("continuous_usage_stats", False))


def _logit_bias(f: Fields) -> dict[int, float]:
    """Token id -> bias; each value read as any number field is (an integer no float holds, 10**400, was a 500)."""
    bias = {}
    raw = f.dict("logit_bias", {})
    values = Fields(raw, f.name("logit_bias."))
    for key in raw:
        try:
            token_id = int(key)
        except (TypeError, ValueError):
            raise f.bad("logit_bias", f"keys must be token ids, got {key!r}") from None
        bias[token_id] = values.float(key)
    return bias


def _structured_output(f: Fields) -> StructuredOutput | None:
    vllm = vllm_structured_output(f)
    if vllm is not None:
        key, spec = vllm
        if (f.dict("response_format", None) or {}).get("type", "text") != "text":
            raise f.bad(key, "cannot be combined with response_format: send one constraint")
        return spec
    if not f.has("response_format"):
        return None
    from velollm.tools.tool_grammar import response_format_constraint

    rf = Fields(f.dict("response_format"), "response_format.")
    kind = rf.str("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise rf.bad("type", f"must be one of 'text', 'json_object', 'json_schema', got {kind!r}")
    if kind == "json_schema":
        spec = Fields(rf.dict("json_schema"), "response_format.json_schema.")
        check_schema(spec.dict("schema"), "response_format.json_schema.schema")
        spec.str("name", "")
        spec.bool("strict", False)  # accepted; the schema is enforced as given either way
    out = response_format_constraint(f.dict("response_format"))
    if out is not None and out.kind not in STRUCTURED_OUTPUT_KINDS:
        raise rf.bad("type", f"{kind!r} is not supported")
    return out


def _tool_choice(f: Fields, names: list[str], choice: Any) -> str | dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if choice.get("type", "function") != "function" or not isinstance(name, str) or not name:
            raise f.bad("tool_choice", "must name a function: {'type': 'function', 'function': {'name': ...}}")
        if name not in names:
            raise f.bad("tool_choice", f"names {name!r}, which is not in tools")
        return choice
    if not isinstance(choice, str) or choice not in TOOL_CHOICES:
        raise f.bad("tool_choice", f"must be one of {sorted(TOOL_CHOICES)} or a named function, got {choice!r}")
    if choice == "required" and not names:
        raise f.bad("tool_choice", "'required' needs tools, but none were given")
    return choice


def _allowed_tools(f: Fields, tools: list[dict[str, Any]] | None) -> tuple[list[dict[str, Any]] | None, str]:
    """`tool_choice: {"type": "allowed_tools", "allowed_tools": {"mode", "tools"}}`: the tools it names
    (the others leave the prompt too) and its mode, auto or required."""
    spec = Fields(f.raw("tool_choice"), "tool_choice.")
    allowed = Fields(spec.dict("allowed_tools"), "tool_choice.allowed_tools.")
    mode = allowed.str("mode")
    if mode not in ("auto", "required"):
        raise allowed.bad("mode", f"must be 'auto' or 'required', got {mode!r}")
    wanted = []
    for i, tool in enumerate(allowed.list("tools")):
        fn = Fields(tool, f"tool_choice.allowed_tools.tools[{i}].").dict("function")
        wanted.append(Fields(fn, f"tool_choice.allowed_tools.tools[{i}].function.").str("name"))
    names = {t.get("function", {}).get("name") for t in tools or [] if isinstance(t, dict)}
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise allowed.bad("tools", f"names {unknown[0]!r}, which is not in tools")
    return [t for t in tools or [] if t["function"]["name"] in wanted] or None, mode


def _tool_config(f: Fields) -> ToolConfig:
    tools = f.list("tools", None) or None  # the ollama client and some SDKs send [] for "no tools"
    choice = f.raw("tool_choice")
    names = []
    for i, tool in enumerate(tools or []):
        t = Fields(tool, f"tools[{i}].")
        if t.str("type", "function") != "function":
            raise t.bad("type", "must be 'function'")
        fn = Fields(t.dict("function"), f"tools[{i}].function.")
        names.append(fn.str("name"))
        if fn.has("parameters"):
            fn.dict("parameters")
    if tools:
        from velollm.tools.tool_schema import tool_specs

        tool_specs(tools)  # 400 on a parameters schema that is no JSON Schema, or a name given twice
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        tools, choice = _allowed_tools(f, tools)
        names = [t["function"]["name"] for t in tools or []]
    return ToolConfig(tools=tools, tool_choice=_tool_choice(f, names, choice),
                      parallel_tool_calls=f.bool("parallel_tool_calls", True))


def _prompt_logprobs(f: Fields) -> int | None:
    """vLLM's `prompt_logprobs` (its range is SamplingParams'). Like vLLM, not with stream: the prompt's logprobs
    come whole, on the response (a streamed echo + logprobs completion has them in its first chunk)."""
    value = f.int("prompt_logprobs", None, lo=0, hi=MAX_LOGPROBS)
    if value is not None and f.raw("stream") is True:
        raise f.bad("prompt_logprobs", "is not available when stream is true")
    return value


def _sampling(f: Fields, *, max_tokens: int | None, logprobs: int | None,
              prompt_logprobs: int | None = None) -> SamplingParams:
    """The sampling fields both endpoints share; SamplingParams checks the ranges (param-named 400s)."""
    n = f.int("n", 1, lo=1, hi=MAX_N)
    top_k = f.int("top_k", -1)
    structured_output = _structured_output(f)
    allowed_token_ids = f.int_list("allowed_token_ids", None)
    if allowed_token_ids is not None and (structured_output is not None or _calls_tools(f)):
        # The grammar's mask on top of this one may leave no token at all: refused rather than answered with one.
        raise f.bad("allowed_token_ids", "cannot be combined with a response format or tool calls")
    return SamplingParams(
        n=n,
        temperature=f.float("temperature", 1.0),
        top_p=f.float("top_p", 1.0),
        top_k=-1 if top_k == 0 else top_k,
        min_p=f.float("min_p", 0.0),
        presence_penalty=f.float("presence_penalty", 0.0),
        frequency_penalty=f.float("frequency_penalty", 0.0),
        repetition_penalty=f.float("repetition_penalty", 1.0),
        seed=f.int("seed", None, lo=SEED_MIN, hi=SEED_MAX),
        max_tokens=max_tokens,
        min_tokens=f.int("min_tokens", 0),
        stop=f.str_list("stop", []),
        stop_token_ids=f.int_list("stop_token_ids", []),
        ignore_eos=f.bool("ignore_eos", False),
        include_stop_str_in_output=f.bool("include_stop_str_in_output", False),
        skip_special_tokens=f.bool("skip_special_tokens", True),
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        logit_bias=_logit_bias(f),
        allowed_token_ids=allowed_token_ids,
        cache_salt=f.str("cache_salt", None),
        structured_output=structured_output,
    )


def _calls_tools(f: Fields) -> bool:
    return bool(f.raw("tools") or f.raw("functions")) and f.raw("tool_choice") != "none"


def model_of(body: Any) -> str:
    """The requested model (a non-empty string): all the router reads of a body."""
    return _model(Fields(body))


def _model(f: Fields) -> str:
    model = f.str("model")
    if not model:
        raise f.bad("model", "must not be empty")
    return model


def _refuse_unhonoured_vllm(f: Fields) -> None:
    """vLLM's extras this server does not have: a 400 naming the key rather than an answer without it."""
    if f.bool("use_beam_search", False):
        raise f.bad("use_beam_search", "is not supported: this server samples (ask n answers instead)")
    if f.str_list("bad_words", []):
        raise f.bad("bad_words", "is not supported (logit_bias -100 bans single tokens)")
    if f.bool("return_token_ids", False):
        raise f.bad("return_token_ids", "is not supported (logprobs give the answer's tokens)")


def _refuse_unhonoured(f: Fields) -> None:
    """Chat fields a native model cannot honour: a 400 rather than an answer without what was asked."""
    _refuse_unhonoured_vllm(f)
    if f.raw("truncate_prompt_tokens") is not None:
        raise f.bad("truncate_prompt_tokens", "is not supported on chat (context_overflow 'truncate' drops the "
                                              "oldest messages of a conversation over the context)")
    modalities = f.raw("modalities", [])
    wants_audio = isinstance(modalities, list) and "audio" in modalities
    if wants_audio or f.has("audio"):
        raise f.bad("modalities" if wants_audio else "audio", "asks for audio output; this server answers text only")


def parse_chat_request(body: Any) -> ChatCompletionRequest:
    body, legacy_functions = as_tools(body)  # the deprecated functions / function_call, as tools
    f = Fields(body)
    model = _model(f)
    _refuse_unhonoured(f)
    messages = normalize_messages(body.get("messages"))
    # checked here, under the name the client sent (SamplingParams would name max_tokens)
    max_tokens = f.int("max_completion_tokens", None, lo=1) if f.has("max_completion_tokens") \
        else f.int("max_tokens", None, lo=1)
    logprobs = f.bool("logprobs", False)
    top_logprobs = f.int("top_logprobs", 0, lo=0, hi=20)
    if f.has("top_logprobs") and top_logprobs and not logprobs:
        raise f.bad("top_logprobs", "requires logprobs to be true")
    tool_config = _tool_config(f)
    prompt_logprobs = _prompt_logprobs(f)
    params = _sampling(f, max_tokens=max_tokens, logprobs=top_logprobs if logprobs else None,
                       prompt_logprobs=prompt_logprobs)
    template_kwargs = dict(f.dict("chat_template_kwargs", {}))
    if "chat_template" in template_kwargs or f.has("chat_template"):
        # A template is code the server runs; like vLLM's default, requests may not bring their own.
        raise f.bad("chat_template", "cannot be set per request")
    continue_final = f.bool("continue_final_message", False)
    add_generation_prompt = f.bool("add_generation_prompt", not continue_final)
    if continue_final and add_generation_prompt:
        raise f.bad("continue_final_message", "cannot be true together with add_generation_prompt")
    if continue_final and (messages[-1]["role"] != "assistant" or not messages[-1]["content"]):
        raise f.bad("continue_final_message", "needs a final assistant message with content to continue")
    return ChatCompletionRequest(
        model=model, messages=messages, params=params, stream=_stream_config(f), logprobs=logprobs,
        top_logprobs=top_logprobs, tool_config=tool_config,
        add_generation_prompt=add_generation_prompt, continue_final_message=continue_final,
        chat_template_kwargs=template_kwargs,
        think=ThinkSetting.from_openai(f.raw("reasoning_effort"), template_kwargs),
        include_reasoning=f.bool("include_reasoning", True),
        context_overflow=parse_overflow(f.raw("context_overflow")),
        legacy_functions=legacy_functions,
        tokens_as_ids=f.bool("return_tokens_as_token_ids", False),
        prompt_logprobs=prompt_logprobs,
        echo=f.bool("echo", False),
    )


def _prompts(f: Fields) -> list[str | list[int]]:
    raw = f.raw("prompt")
    if raw is None:
        raise f.bad("prompt", "is required: a string, an array of strings, or token ids")
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw:
        if all(isinstance(p, str) for p in raw):
            prompts: list[str | list[int]] = list(raw)
        elif all(isinstance(t, int) and not isinstance(t, bool) for t in raw):
            prompts = [list(raw)]
        elif all(isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p)
                 for p in raw):
            prompts = [list(p) for p in raw]
        else:
            raise f.bad("prompt", "must be a string, an array of strings, an array of token ids, "
                                  "or an array of arrays of token ids")
        if len(prompts) > MAX_PROMPTS:
            raise f.bad("prompt", f"holds {len(prompts)} prompts; at most {MAX_PROMPTS} per request")
        return prompts
    raise f.bad("prompt", "must be a non-empty string, array of strings, or array of token ids")


def parse_completion_request(body: Any) -> CompletionRequest:
    f = Fields(body)
    model = _model(f)
    _refuse_unhonoured_vllm(f)
    prompts = _prompts(f)
    suffix = f.str("suffix", None) or ""
    if suffix and not all(isinstance(p, str) for p in prompts):
        raise f.bad("suffix", "needs the prompt as text (it is rendered with the prompt by the model's template)")
    truncate = f.int("truncate_prompt_tokens", None, lo=-1)
    if truncate == 0 or (truncate is not None and suffix):
        raise f.bad("truncate_prompt_tokens", "must be -1 or at least 1" if truncate == 0 else
                    "cannot cut a prompt rendered with a suffix")
    best_of = f.int("best_of", None)
    if best_of is not None and best_of != f.int("n", 1):
        raise f.bad("best_of", "is not supported (only best_of == n)")
    echo = f.bool("echo", False)
    logprobs = f.int("logprobs", None, lo=0, hi=20)
    max_tokens = f.int("max_tokens", 16)
    echo_only = echo and max_tokens == 0
    if max_tokens == 0 and not echo:
        raise f.bad("max_tokens", "must be at least 1 (0 only with echo: the prompt back, nothing generated)")
    prompt_logprobs = _prompt_logprobs(f)
    # The engine computes the prompt's top k once for both: echo's top_logprobs (logprobs) and prompt_logprobs.
    asked = [k for k in (prompt_logprobs, logprobs if echo else None) if k is not None]
    params = _sampling(f, max_tokens=1 if echo_only else max_tokens, logprobs=logprobs,
                       prompt_logprobs=max(asked) if asked else None)
    return CompletionRequest(model=model, prompts=prompts, params=params, stream=_stream_config(f), echo=echo,
                             suffix=suffix, echo_only=echo_only, prompt_logprobs=prompt_logprobs,
                             truncate_prompt_tokens=truncate,
                             add_special_tokens=f.bool("add_special_tokens", True),
                             tokens_as_ids=f.bool("return_tokens_as_token_ids", False))
