"""Ollama model listing routes: /api/tags, /api/show, /api/ps, /api/version (`GET|HEAD /`: status_page.py).

Open WebUI and other clients read these, so they carry real facts from the model source and config.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from velollm import __version__
from velollm.api.handler import AppState, Call, endpoint, forward, read_json
from velollm.api.protocol_ollama import model_of
from velollm.api.served_model import ServedModel
from velollm.api.targets import Upstream, UpstreamTarget
from velollm.api.virtual_model import ollama_tag, with_virtual
from velollm.errors import VeloLLMError
from velollm.reasoning import ThinkingTemplate
from velollm.request_fields import Fields
from velollm.wire.go_format import go_syntax, go_value
from velollm.wire.names import name_key
from velollm.wire.server_version import version_body
from velollm.wire.timestamps import rfc3339

logger = logging.getLogger(__name__)

# Clients gate features on the Ollama version they see (tools, structured outputs); this is the
# Ollama API level VeloLLM's /api routes follow, not VeloLLM's own version.
OLLAMA_API_VERSION = "0.12.0"
_FOREVER = dt.timedelta(microseconds=(2**63 - 1) // 1000)  # Ollama's "keep loaded forever"


def human_number(n: int) -> str:
    """Ollama's format.HumanNumber: 8030261248 -> "8.0B", 361821696 -> "361.82M"."""
    for limit, unit, decimals in ((10**12, "T", 1), (10**9, "B", 1), (10**6, "M", 2)):
        if n >= limit:
            value = n / limit
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.{decimals}f}{unit}"
    return f"{n / 1000:.0f}K" if n >= 1000 else str(n)


def _info(served: ServedModel) -> Any:
    return served.engine.source.info


def details(served: ServedModel) -> dict[str, Any]:
    info = _info(served)
    return {"parent_model": "", "format": info.format, "family": info.family, "families": [info.family],
            "parameter_size": human_number(info.parameter_count), "quantization_level": info.quantization_level}


def model_info(served: ServedModel) -> dict[str, Any]:
    """GGUF-style keys (what `ollama show` prints), from the model config."""
    if getattr(served.engine, "is_embedding", False):
        from velollm.api.embedding_format import embedding_model_info

        return embedding_model_info(served.engine)
    c = served.engine.model_config
    arch = _info(served).family
    out: dict[str, Any] = {
        "general.architecture": arch,
        "general.parameter_count": _info(served).parameter_count,
        f"{arch}.context_length": c.max_position_embeddings,
        f"{arch}.embedding_length": c.hidden_size,
        f"{arch}.block_count": c.num_hidden_layers,
        f"{arch}.feed_forward_length": c.intermediate_size,
        f"{arch}.attention.head_count": c.num_attention_heads,
        f"{arch}.attention.head_count_kv": c.num_key_value_heads,
        f"{arch}.attention.key_length": c.head_dim,
        f"{arch}.attention.value_length": c.head_dim,
        f"{arch}.attention.layer_norm_rms_epsilon": c.rms_norm_eps,
        f"{arch}.rope.freq_base": c.rope_theta,
        f"{arch}.vocab_size": c.vocab_size,
    }
    if c.rope_scaling is not None:
        out[f"{arch}.rope.scaling.factor"] = c.rope_scaling.factor
    return out


def capabilities(served: ServedModel) -> list[str]:
    if getattr(served.engine, "is_embedding", False):
        return ["embedding"]
    # Any chat model can take tools: its own template renders them when it knows how, else the
    # built-in fallback prompt does, and constrained decoding makes the calls well formed either way.
    # not at import: --proxy-only loads no engine
    from velollm.engine.text.template_layer import go_layer, insert_layer

    template = served.engine.tokenizer.chat_template
    go = go_layer(served.engine.tokenizer)
    # Ollama's order: completion, tools, insert (a TEMPLATE layer naming .Suffix, whichever renders the chats),
    # thinking
    insert = ["insert"] if insert_layer(served.engine.tokenizer) is not None else []
    if go is not None:  # rendered by the TEMPLATE layer: Ollama's rule, tools when it names .Tools
        from velollm.api.thinking import thinking_template
        from velollm.engine.text.go_template.chat import uses_tools

        thinks = thinking_template(served.engine.tokenizer).supports_thinking
        return ["completion"] + (["tools"] if uses_tools(go) else []) + insert + (["thinking"] if thinks else [])
    if not template:
        return ["completion"] + insert
    thinks = ThinkingTemplate.of(template).supports_thinking
    return ["completion", "tools"] + insert + (["thinking"] if thinks else [])


def _modified(served: ServedModel) -> str:
    return rfc3339(_info(served).modified_at or served.loaded_at)


def _parameters(options: dict[str, Any]) -> str:
    # `ollama show` prints `%-30s %#v`, one line per value of a list.
    return "\n".join(f"{key:<30} {go_syntax(v)}" for key, v in _option_values(options))


def _option_values(options: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(key, v) for key, value in options.items() for v in (value if isinstance(value, list) else [value])]


def _template(served: ServedModel) -> str:
    return _info(served).template or getattr(served.engine.tokenizer, "chat_template", None) or "{{ .Prompt }}"


def _modelfile(served: ServedModel) -> str:
    # Ollama's Model.String: one parser.Command.String a line, values quoted only where its parser needs it.
    info = _info(served)
    lines = ['# Modelfile generated by "ollama show"', "# To build a new Modelfile based on this, replace FROM with:",
             f"# FROM {served.name}", "", f"FROM {info.path or served.spec}", f"TEMPLATE {_quoted(_template(served))}"]
    if info.default_system:
        lines.append(f"SYSTEM {_quoted(info.default_system)}")
    lines += [f"PARAMETER {key} {_quoted(go_value(v))}" for key, v in _option_values(info.default_options)]
    # one LICENSE a license layer, as Ollama's Model.String writes them (its show's `license` joins them)
    lines += [f"LICENSE {_quoted(text)}" for text in info.licenses or ((info.license,) if info.license else ())]
    lines += [f"MESSAGE {m['role']} {_quoted(m['content'])}" for m in info.default_messages]
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    """A Modelfile value as Ollama's parser.quote writes it: quoted when it spans lines or has edge spaces."""
    if "\n" in text or text.startswith(" ") or text.endswith(" "):
        return f'"""{text}"""' if '"' in text else f'"{text}"'
    return text


def tag_entry(served: ServedModel) -> dict[str, Any]:
    info = _info(served)
    return {"name": served.name, "model": served.name, "modified_at": _modified(served), "size": info.size_bytes,
            "digest": info.digest, "details": details(served), "capabilities": capabilities(served)}


def _store_entries() -> list[dict[str, Any]]:
    """The Ollama store's models, as Ollama lists them (manifest and config blob only: no GGUF read)."""
    from velollm.engine.loader import ollama_store

    out = []
    for m in ollama_store.list_models():
        c = m.config
        family = str(c.get("model_family") or "")
        entry = {"name": m.display_name, "model": m.display_name, "modified_at": rfc3339(m.modified_at),
                 "size": m.size, "digest": m.digest,
                 "details": {"parent_model": "", "format": str(c.get("model_format") or "gguf"), "family": family,
                             "families": c.get("model_families") or ([family] if family else None),
                             "parameter_size": str(c.get("model_type") or ""),
                             "quantization_level": str(c.get("file_type") or "")}}
        _config_extras(entry, c)
        out.append(entry)
    return out


def _config_extras(entry: dict[str, Any], config: dict[str, Any]) -> None:
    """What a newer Ollama writes into the config blob and lists in /api/tags: the context and embedding
    lengths (in `details`) and the capabilities."""
    for key in ("context_length", "embedding_length"):
        if isinstance(config.get(key), int) and not isinstance(config.get(key), bool):
            entry["details"][key] = config[key]
    capabilities = config.get("capabilities")
    if isinstance(capabilities, list) and all(isinstance(c, str) for c in capabilities):
        entry["capabilities"] = capabilities


def merge_listings(native: list[dict[str, Any]], upstream: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Native entries first; an upstream entry for a name already listed is dropped (same model)."""
    seen = {name_key(e.get(key) or "") for e in native}
    out = list(native)
    for entry in upstream:
        k = name_key(entry.get(key) or "")
        if k not in seen:
            seen.add(k)
            out.append(entry)
    return out


async def listing(state: AppState, entry: Callable[[ServedModel], dict[str, Any]],
                  store: Callable[[], list[dict[str, Any]]], upstream: Callable[[Upstream], Awaitable[list[dict[str, Any]]]],
                  key: str) -> list[dict[str, Any]]:
    """/api/tags or /v1/models: the loaded models, then what could load on demand (the Ollama store),
    then the upstream's, one entry per name."""
    await state.models.wait_ready()
    models = [entry(m) for m in state.models.models()]
    if state.models.on_demand is not None:
        try:
            models = merge_listings(models, await asyncio.to_thread(store), key)
        except Exception:  # a broken store must not break the listing
            logger.exception("listing the Ollama store failed")
    if state.models.upstream is not None:
        models = merge_listings(models, await upstream(state.models.upstream), key)
    return models


@endpoint("/api/tags")
async def tags(request: Request, state: AppState, call: Call) -> Response:
    models = await listing(state, tag_entry, _store_entries, lambda u: u.ollama_tags(), "name")
    return JSONResponse({"models": with_virtual(ollama_tag(state), models)})


@endpoint("/api/show")
async def show(request: Request, state: AppState, call: Call) -> Response:
    body = await read_json(request)
    name = model_of(body)
    if state.router is not None and state.router.handles(name):
        name = body["model"] = state.router.policy.default  # the virtual model shows its default model
        for routed_to in reversed(state.router.policy.models[1:]):  # likely next: loaded ahead (free slots)
            state.models.predict(routed_to, "routed to by " + state.router.name)
    call.model = name
    # Like Ollama, showing a model does not load it before answering; a client shows the model a user
    # picked, so an on-demand one then loads ahead in the background when a slot is free (prefetch).
    target = await state.models.describe(name, prefetch=True)
    if isinstance(target, UpstreamTarget):
        return await forward(request, state, call, target, body)
    served = target.model
    info = _info(served)
    facts, tensors = await _file_facts(served, Fields(body).bool("verbose", False))
    return JSONResponse({
        "license": info.license, "modelfile": _modelfile(served), "parameters": _parameters(info.default_options),
        "template": _template(served), "system": info.default_system or "", "details": details(served),
        "model_info": {**model_info(served), **facts}, "capabilities": capabilities(served),
        "modified_at": _modified(served), "tensors": tensors,
        **({"messages": list(info.default_messages)} if info.default_messages else {}),
    })


async def _file_facts(served: ServedModel, verbose: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The model file's metadata over model_info, and its tensor table, with or without `verbose` as Ollama's
    GetModelInfo reads them (model_file_facts: without it, arrays null); a file that cannot be read now (moved
    since the load) leaves model_info as the config gives it and no tensors."""
    from pathlib import Path

    from velollm.api.model_file_facts import file_facts

    path = getattr(served.engine.source, "path", None) or _info(served).path  # an embedding source: its info's
    if not path:
        return {}, []
    try:
        return await asyncio.to_thread(file_facts, Path(path), verbose)
    except (OSError, ValueError, VeloLLMError) as exc:
        logger.warning("show %s: the model file's metadata is unreadable: %s", served.name, exc)
        return {}, []


@endpoint("/api/ps")
async def ps(request: Request, state: AppState, call: Call) -> Response:
    upstream = state.models.upstream
    running = getattr(upstream, "ollama_ps", None)  # the router: what runs on each backend, merged
    if state.config.proxy_only and upstream is not None and running is None:  # what runs is the upstream's to say
        response = await upstream.forward(request, {}, None, None)
        return response if response.status_code == 200 else JSONResponse({"models": []})
    forever = rfc3339(dt.datetime.now(dt.timezone.utc) + _FOREVER)  # pinned (--model) models
    models = []
    for served, expires_at in state.models.running():
        info = _info(served)
        on_gpu = "cuda" in str(getattr(served.engine, "device", "cpu"))
        # what the model holds in memory (weights as held + KV cache), as Ollama reports; the file size otherwise
        size = served.engine.memory_bytes() if hasattr(served.engine, "memory_bytes") else info.size_bytes
        expires = forever if math.isinf(expires_at) else rfc3339(expires_at)
        models.append({"name": served.name, "model": served.name, "size": size, "digest": info.digest,
                       "details": details(served), "expires_at": expires, "size_vram": size if on_gpu else 0,
                       "context_length": served.engine.max_model_len})
    if running is not None:
        models = merge_listings(models, await running(), "name")
    return JSONResponse({"models": models})


async def version(request: Request) -> Response:
    return JSONResponse(version_body(OLLAMA_API_VERSION, __version__))


def routes() -> list[Route]:
    return [
        Route("/api/version", version, methods=["GET", "HEAD"]),
        Route("/api/tags", tags, methods=["GET", "HEAD"]),
        Route("/api/show", show, methods=["POST"]),
        Route("/api/ps", ps, methods=["GET"]),
    ]
