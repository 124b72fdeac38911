"""Parsing and validation of Ollama /api requests: generate, chat, options, keep_alive, format, think.

keep_alive is parsed as Ollama parses it (velollm.api.keep_alive) and honoured by the model pool.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from velollm.api.features import STRUCTURED_OUTPUT_KINDS, check_schema
from velollm.api.ollama_template import MAX_TEMPLATE_CHARS
from velollm.context.overflow import parse_overflow
from velollm.errors import InvalidRequest
from velollm.reasoning import ThinkSetting
from velollm.request_fields import Fields
from velollm.sampling_params import SamplingParams, StructuredOutput
from velollm.wire.keep_alive import keep_alive_seconds
from velollm.wire.ollama_sampler import clamp_option

logger = logging.getLogger(__name__)

# Ollama's DefaultOptions() for the sampling keys (api/types.go).
DEFAULT_OPTIONS: dict[str, Any] = {"num_predict": -1, "temperature": 0.8, "top_k": 40, "top_p": 0.9,
                                   "min_p": 0.0, "seed": -1, "repeat_last_n": 64, "repeat_penalty": 1.0,
                                   "presence_penalty": 0.0, "frequency_penalty": 0.0}
# Load-time or llama.cpp-only keys: accepted silently, they have no meaning per request here.
IGNORED_OPTIONS = frozenset({"num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread",
                             "draft_num_predict", "numa", "low_vram", "f16_kv", "logits_all", "vocab_only",
                             "use_mlock", "embedding_only", "penalize_newline", "typical_p", "tfs_z",
                             "mirostat", "mirostat_tau", "mirostat_eta"})

# Ollama refuses `options.stop` as a plain string (its message; Ollama's status is a 500 from
# handleScheduleError, a client error all the same: 400 here, as for every other mistyped option).
STOP_NOT_ARRAY = 'option "stop" must be of type array (options.stop must be an array of strings, got a string)'

# SamplingParams' field -> the Ollama option that sets it (the others share their name)
_OPTION_OF = {"max_tokens": "num_predict", "repetition_penalty": "repeat_penalty"}


@dataclass(frozen=True)
class OllamaSampling:
    params: SamplingParams  # max_tokens None: until the context is full
    num_ctx: int | None  # a smaller per-request context, when asked


@dataclass(frozen=True)
class GenerateRequest:
    model: str
    prompt: str
    stream: bool
    options: dict[str, Any]
    suffix: str = ""  # fill-in-the-middle: what follows the insertion (the model's TEMPLATE layer renders it)
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    format: StructuredOutput | None = None
    keep_alive_s: float | None = None  # None: the server's default
    think: ThinkSetting = field(default_factory=ThinkSetting)
    logprobs: bool = False
    top_logprobs: int = 0
    context_overflow: str | None = None  # options.context_overflow, or "error" for `truncate: false`
    debug_render_only: bool = False  # `_debug_render_only`: answer the rendered prompt, run nothing
    num_keep: int = 4  # options.num_keep: leading ids never truncated away (Ollama's default; < 0: all)
    shift: bool = True  # `shift`: false ends the answer when the context is full (done_reason "length")


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    options: dict[str, Any]
    tools: list[dict[str, Any]] | None = None
    format: StructuredOutput | None = None
    keep_alive_s: float | None = None
    think: ThinkSetting = field(default_factory=ThinkSetting)
    logprobs: bool = False
    top_logprobs: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    context_overflow: str | None = None  # options.context_overflow, or "error" for `truncate: false`
    debug_render_only: bool = False  # `_debug_render_only`: answer the rendered prompt, run nothing
    num_keep: int = 4  # options.num_keep: leading ids kept when the prompt is cut (Ollama's default; < 0: all)
    shift: bool = True  # `shift`: false ends the answer when the context is full (done_reason "length")


def parse_format(value: Any) -> StructuredOutput | None:
    """`format`: "json" or a JSON Schema object, enforced by constrained decoding."""
    from velollm.tools.tool_grammar import ollama_format_constraint

    if value not in (None, "", "json") and not isinstance(value, dict):
        raise InvalidRequest(f'invalid format: {value!r}; expected "json" or a valid JSON Schema object',
                             param="format")
    if isinstance(value, dict):
        check_schema(value, "format")
    out = ollama_format_constraint(value)
    if out is not None and out.kind not in STRUCTURED_OUTPUT_KINDS:
        raise InvalidRequest(f"format {out.kind} is not supported", param="format")
    return out


def sampling_from_options(options: dict[str, Any], model_defaults: dict[str, Any],
                          structured: StructuredOutput | None, logprobs: int | None) -> OllamaSampling:
    """Ollama's precedence: DefaultOptions() <- the model's params layer <- the request's options."""
    for key in options:
        if key not in DEFAULT_OPTIONS and key not in ("stop", "num_ctx", "context_overflow", "num_keep") \
                and key not in IGNORED_OPTIONS:
            logger.warning("invalid option provided: %s (ignored, as Ollama does)", key)
    if isinstance(options.get("stop"), str):  # Ollama's Options.FromMap: a []string field given a string
        raise InvalidRequest(STOP_NOT_ARRAY, param="options.stop")
    merged = {**DEFAULT_OPTIONS, **(model_defaults or {}), **options}
    o = Fields(merged, "options.")
    num_predict = o.int("num_predict", truncate=True)
    seed = o.int("seed", truncate=True, lo=-(2**63), hi=2**63 - 1)  # Go's int: larger is a decode error there
    repeat_last_n = o.int("repeat_last_n", truncate=True, lo=-1)
    num_ctx = o.int("num_ctx", None, truncate=True, lo=1)
    top_k = o.int("top_k", truncate=True)
    kwargs: dict[str, Any] = {
        "temperature": clamp_option("temperature", o.float("temperature")),  # as Ollama's sampler takes them
        "top_p": clamp_option("top_p", o.float("top_p")),
        "top_k": -1 if top_k <= 0 else top_k,
        "min_p": clamp_option("min_p", o.float("min_p")),
        "seed": None if seed < 0 else seed,
        "max_tokens": num_predict if num_predict > 0 else None,  # -1 unlimited, -2 fill the context
        "stop": o.str_list("stop", []),
        "repetition_penalty": o.float("repeat_penalty") if repeat_last_n != 0 else 1.0,
        "repetition_window": repeat_last_n,
        "presence_penalty": o.float("presence_penalty"),
        "frequency_penalty": o.float("frequency_penalty"),
        "structured_output": structured,
        "logprobs": logprobs,
    }
    try:
        params = SamplingParams(**kwargs)
    except InvalidRequest as exc:
        raise _as_option(exc) from None
    return OllamaSampling(params, num_ctx)


def _as_option(exc: InvalidRequest) -> InvalidRequest:
    """SamplingParams' error, naming the option the client sent (`options.repeat_penalty`)."""
    name = _OPTION_OF.get(exc.param or "", exc.param)
    if exc.param is None or name not in DEFAULT_OPTIONS:
        return exc
    option = f"options.{name}"
    return InvalidRequest(str(exc).replace(exc.param, option, 1), param=option)


def model_of(body: Any) -> str:
    """The requested model (`model`, or the older `name`): all the router reads of a body."""
    return _model(Fields(body))


def _model(f: Fields) -> str:
    model = f.str("model", "") or f.str("name", "")
    if not model:
        raise InvalidRequest("model is required", param="model")
    return model


def _bound(f: Fields) -> dict[str, Any]:
    """The fields Ollama's JSON binding (ShouldBindJSON) checks before its handler looks at the request: each
    one's type, keep_alive's duration, think's value; `truncate` is read for context_overflow (`_common`)."""
    return {
        "model": _model(f), "stream": f.bool("stream", True), "options": _options(f),
        "keep_alive_s": keep_alive_seconds(f.raw("keep_alive"), default=None),
        "think": ThinkSetting.from_ollama(f.raw("think")), "logprobs": f.bool("logprobs", False),
        "top_logprobs": f.int("top_logprobs", 0, lo=0, hi=20),
        "debug_render_only": f.bool("_debug_render_only", False),
        "shift": f.bool("shift", True),
        "truncate": f.bool("truncate", True),
    }


def _common(f: Fields, bound: dict[str, Any]) -> dict[str, Any]:
    """The fields generate and chat share: `bound`'s, then what Ollama checks later (format, options.num_keep,
    the context overflow mode)."""
    common = {k: v for k, v in bound.items() if k != "truncate"}
    return {**common, "format": parse_format(f.raw("format")), "num_keep": _num_keep(f),
            "context_overflow": _overflow(common["options"], bound["truncate"])}


def _num_keep(f: Fields) -> int:
    """options.num_keep (Ollama's int option: any JSON number, truncated); negative means the whole prompt,
    as in Ollama's runner (velollm.context.token_cut clamps it)."""
    options = {k: v for k, v in f.dict("options", {}).items() if v is not None}
    return Fields(options, "options.").int("num_keep", 4, truncate=True)


def _options(f: Fields) -> dict[str, Any]:
    """`options` without its null values: Ollama's Options.FromMap skips a null (the default stays)."""
    return {k: v for k, v in f.dict("options", {}).items() if v is not None}


def _no_images(images: Any, model: str, param: str) -> None:
    if images:
        raise InvalidRequest(f'"{model}" does not support images (vision)', param=param)


def parse_generate_request(body: Any) -> GenerateRequest:
    """The request, checked in Ollama's GenerateHandler order: the JSON binding's errors first (a field of the
    wrong type, context's ids), then the raw-mode 400, then the rest. Its `template` is parsed where it renders
    (in a thread, ollama_template.render): a parse takes about 1 s per MB."""
    f = Fields(body)
    raw = f.bool("raw", False)
    context = f.list("context", None)
    if context is not None and not all(isinstance(t, int) and not isinstance(t, bool) for t in context):
        raise f.bad("context", "must be an array of token ids")  # Ollama's JSON binding ([]int)
    template = f.str("template", None)
    system = f.str("system", None)
    prompt, suffix, images = f.str("prompt", ""), f.str("suffix", ""), f.list("images", None)
    bound = _bound(f)
    if raw and (template or system or context):
        raise InvalidRequest("raw mode does not support template, system, or context", param="raw")
    if template and len(template) > MAX_TEMPLATE_CHARS:
        raise InvalidRequest(f"template is {len(template)} characters, over VeloLLM's cap of {MAX_TEMPLATE_CHARS} "
                             "(1 MiB; a model's template is a few KiB)", param="template")
    common = _common(f, bound)
    _no_images(images, common["model"], "images")
    return GenerateRequest(prompt=prompt, suffix=suffix, system=system, template=template, context=context, raw=raw,
                           **common)


def _overflow(options: dict[str, Any], truncate: bool) -> str | None:
    """options.context_overflow; Ollama's `truncate: false` is the error mode."""
    overflow = parse_overflow(options.get("context_overflow"), "options.context_overflow")
    if overflow is None and not truncate:
        overflow = "error"  # Ollama's `truncate: false`: an error instead of a shorter history
    return overflow


def _chat_message(message: Any, i: int, model: str) -> dict[str, Any]:
    m = Fields(message, f"messages[{i}].")
    role = m.str("role").lower()
    _no_images(m.list("images", None), model, m.name("images"))
    out: dict[str, Any] = {"role": role, "content": m.str("content", "")}
    if m.has("tool_calls"):
        calls = []
        for j, call in enumerate(m.list("tool_calls")):
            fn = Fields(Fields(call, f"{m.name('tool_calls')}[{j}].").dict("function"),
                        f"{m.name('tool_calls')}[{j}].function.")
            calls.append({"type": "function", "function": {"name": fn.str("name"),
                                                           "arguments": dict(fn.dict("arguments", {}))}})
        out["tool_calls"] = calls
    thinking = m.str("thinking", "")
    if thinking:  # the key chat templates read (Qwen3's renders the thinking of a tool loop's calling turn)
        out["reasoning_content"] = thinking
    if m.has("tool_name"):
        out["name"] = m.str("tool_name")
    if m.has("tool_call_id"):
        out["tool_call_id"] = m.str("tool_call_id")
    return out


def collate(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ollama's collate (template/template.go): consecutive messages of one role, tool results aside, are
    one message, their contents joined by a blank line (so two system messages in a row reach a template
    that takes one system message, as on Ollama)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        last = out[-1] if out else None
        if last is None or last["role"] != message["role"] or message["role"] == "tool":
            out.append(dict(message))
            continue
        last["content"] = "\n\n".join(part for part in (last["content"], message["content"]) if part)
        if message.get("tool_calls"):
            last["tool_calls"] = last.get("tool_calls", []) + message["tool_calls"]
    return out


def parse_chat_request(body: Any) -> ChatRequest:
    f = Fields(body)
    common = _common(f, _bound(f))
    messages = collate([_chat_message(m, i, common["model"]) for i, m in enumerate(f.list("messages", []))])
    tools = f.list("tools", None) or None
    if tools:
        from velollm.tools.tool_schema import tool_specs

        tool_specs(tools)  # 400 on a malformed tool, before the model is touched
    return ChatRequest(messages=messages, tools=tools, **common)
