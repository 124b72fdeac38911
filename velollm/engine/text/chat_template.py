"""Chat templates: jinja2 rendering that matches transformers' `apply_chat_template`.

Templates come from model files (untrusted), so they run in jinja2's immutable sandbox with the
same globals and filters transformers provides; the rendered text must be byte-identical to
transformers' for the prompt tokens to match.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from velollm.errors import InvalidRequest, ModelLoadError

logger = logging.getLogger(__name__)

# Names a message's reasoning arrives under; templates read the first (transformers aliases them too).
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (assistant-mask marker): renders its body unchanged."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller: Any) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    # jinja's own tojson HTML-escapes ("<" -> "\u003c"), which would change the prompt text.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _Namespace(jinja2.utils.Namespace):
    """`namespace()` that refuses underscore names, so templates cannot reach CPython internals."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # jinja's signature trick
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates cannot set {name!r} on a namespace")


class _TemplateDict:
    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


@functools.lru_cache(maxsize=32)
def compile_chat_template(source: str) -> jinja2.Template:
    """Compile (once per distinct source) a chat template; a broken template is a model defect."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _Namespace
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise ModelLoadError(f"chat template does not compile: {e} (line {e.lineno})") from e


def _plain(value: Any) -> Any:
    """Rebuild template inputs from plain JSON types: the sandbox must not see arbitrary objects."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return _plain(value.model_dump())
    return f"<{type(value).__name__}>"


def _normalize_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    # Keys whose value is None are dropped (OpenAI clients send content=None next to tool_calls):
    # many templates would print "None" otherwise. transformers does the same.
    out = []
    for message in _plain(list(messages)):
        if not isinstance(message, dict):
            raise InvalidRequest(f"chat messages must be objects, got {message!r}", param="messages")
        message = {k: v for k, v in message.items() if v is not None}
        reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


def select_template(templates: str | Mapping[str, str] | None, *, has_tools: bool) -> str:
    """Pick the template to use: named templates prefer `tool_use` when tools are given, then `default`."""
    if templates is None:
        raise InvalidRequest("this model has no chat template; send a raw prompt instead", param="messages")
    if isinstance(templates, str):
        return templates
    if has_tools and "tool_use" in templates:
        return templates["tool_use"]
    if "default" in templates:
        return templates["default"]
    raise ModelLoadError(f"model has several chat templates and no default: {sorted(templates)}")


def render_chat_template(
    template: str,
    messages: Sequence[Any],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    documents: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = True,
    special_tokens: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> str:
    """Render `messages` like `tokenizer.apply_chat_template(..., tokenize=False)`.

    `special_tokens` (bos_token, eos_token, ...) are template variables; `kwargs` override them and
    reach the template too (e.g. `enable_thinking`). A template's `raise_exception` becomes
    `InvalidRequest`, since it rejects the conversation (wrong role order, unsupported role...).
    """
    if not messages:
        raise InvalidRequest("messages must not be empty", param="messages")
    if tools is not None:
        for tool in tools:
            if not isinstance(tool, Mapping):
                raise InvalidRequest(f"each tool must be a JSON object, got {tool!r}", param="tools")
    if documents is not None and any(not isinstance(d, Mapping) for d in documents):
        raise InvalidRequest("each document must be a JSON object", param="documents")
    variables = {**(special_tokens or {}), **kwargs}
    compiled = compile_chat_template(template)
    try:
        return compiled.render(
            messages=_normalize_messages(messages),
            tools=_plain(list(tools)) if tools is not None else None,
            documents=_plain(list(documents)) if documents is not None else None,
            add_generation_prompt=add_generation_prompt,
            **_plain(variables),
        )
    except jinja2.exceptions.SecurityError as e:
        raise InvalidRequest(f"chat template refused the input: {e}", param="messages") from e
    except jinja2.TemplateError as e:
        raise InvalidRequest(f"chat template rejected the conversation: {e}", param="messages") from e
    except (TypeError, KeyError, AttributeError, ValueError, IndexError) as e:
        raise InvalidRequest(f"chat template failed on these messages: {e!r}", param="messages") from e
