"""Ollama client, OpenAI-compatible upstream: /api/chat, /api/generate and /api/embed(dings) sent to
/v1/*, the answers (whole or SSE streams) turned into Ollama's (whole or NDJSON); a load / unload
request and /api/show are answered here, as the upstream has no such thing. The formats themselves:
ollama_via_openai.py."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx
from starlette.responses import JSONResponse, Response

from velollm.proxy import ollama_via_openai as o2o
from velollm.proxy.answer_repair import AnswerRepair
from velollm.proxy.prompt_tokens import count_prompt_tokens
from velollm.proxy.schema_format import send_with_schema
from velollm.proxy.upstream import Upstream, UpstreamUnavailable
from velollm.proxy.upstream_answer import converted_error, embed, error_answer, read_json, streaming
from velollm.reasoning.openai_answer import OpenAIAnswerSplit
from velollm.wire.errors import error_message
from velollm.wire.framing import ndjson_line
from velollm.wire.keep_alive import keep_alive_seconds
from velollm.wire.pull_answer import cannot_pull, present, wants_stream
from velollm.wire.timestamps import now_rfc3339

logger = logging.getLogger(__name__)

_SHOW_LISTING_WAIT_S = 5.0  # an upstream slower than this to list: /api/show answers from its last listing


async def ollama_via_openai(upstream: Upstream, path: str, body: dict[str, Any],
                             repair: AnswerRepair | None, split: OpenAIAnswerSplit | None = None) -> Response:
    model = str(body.get("model") or "")
    if path in ("/api/embed", "/api/embeddings"):
        return await _embeddings_via_openai(upstream, path, body)
    if path == "/api/show":
        # answered here, but only for a model the upstream lists: a typo is a 404 as on Ollama, not a model card
        listing = await upstream.list_models(wait=_SHOW_LISTING_WAIT_S)
        if listing is not None and not listing.has(model):
            return error_answer("ollama", 404, f"model '{model}' not found")
        return JSONResponse(_show(model))
    if path == "/api/pull":
        return await _pull(upstream, str(body.get("model") or body.get("name") or ""), wants_stream(body))
    # The upstream has no keep_alive to set, but a bad one is Ollama's 400 all the same.
    asked = path in ("/api/chat", "/api/generate")
    keep_alive = keep_alive_seconds(body.get("keep_alive"), default=None) if asked else None
    if path == "/api/chat":
        if not body.get("messages"):
            return _load_answer(model, "chat", keep_alive)
        target, converted = "/v1/chat/completions", o2o.chat_request(body)
    elif path == "/api/generate":
        if not body.get("prompt") and not body.get("images"):
            return _load_answer(model, "generate", keep_alive)
        target, converted = o2o.generate_request(body)
    else:
        return error_answer("ollama", 501, f"{path} is not available through an OpenAI-compatible upstream")
    converter = o2o.NdjsonAnswer(model, "chat" if path == "/api/chat" else "generate")
    response = await send_with_schema(upstream, target, converted)
    if response.status_code != 200:
        return await converted_error(upstream, response, "ollama")
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        answer = await read_json(upstream, response)
        if split is not None and isinstance(answer, dict):
            answer = split.completion(answer)
        if repair is not None and isinstance(answer, dict):
            answer = repair.openai_answer(answer)
        obj = converter.whole(answer)
        if converted["stream"]:
            return Response(ndjson_line(obj), media_type="application/x-ndjson")
        return JSONResponse(obj)
    asked = (target, converted)
    if converted["stream"]:
        return streaming(_sse_to_ndjson(upstream, response, converter, asked, repair, split), response,
                          "application/x-ndjson")
    return await _collapse(_sse_to_ndjson(upstream, response, converter, asked, split=split), path,
                           upstream.config.max_body_bytes, repair)


async def _sse_to_ndjson(upstream: Upstream, response: httpx.Response, converter: o2o.NdjsonAnswer,
                         asked: tuple[str, dict[str, Any]], repair: AnswerRepair | None = None,
                         split: OpenAIAnswerSplit | None = None) -> AsyncIterator[bytes]:
    """`asked`: the upstream request (path, body), its prompt counted when the stream carried no usage;
    `repair`: the calls, which arrive whole on the final line, are repaired there."""

    async def final() -> bytes:
        end = time.perf_counter_ns()  # the answer's durations end here, not after the count
        if converter.usage.get("prompt_tokens") is None:
            converter.counted_prompt_tokens = await count_prompt_tokens(upstream, *asked)
        obj = converter.final(end=end)
        return ndjson_line(repair.ollama_answer(obj, whole=False) if repair is not None else obj)

    try:
        async for line in upstream.iter_lines(response):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                yield await final()
                return
            chunk = json.loads(payload)
            if "error" in chunk:
                yield ndjson_line({"error": error_message(chunk)})
                return
            if split is not None:
                chunk = split.chunk(chunk)
            for obj in converter.feed(chunk):
                yield ndjson_line(obj)
        # Some servers end without [DONE]: a stream that gave a finish reason is complete.
        if converter.finish is not None:
            yield await final()
        else:
            yield ndjson_line({"error": "the upstream ended the stream early"})
    except UpstreamUnavailable as exc:
        logger.warning("upstream stream broken: %s", exc)
        yield ndjson_line({"error": str(exc)})
    except ValueError as exc:
        yield ndjson_line({"error": f"the upstream sent invalid JSON: {exc}"})
    finally:
        await response.aclose()


async def _collapse(lines: AsyncGenerator[bytes, None], path: str, max_bytes: int,
                    repair: AnswerRepair | None = None) -> Response:
    """Non-streamed Ollama answer from an upstream that streamed anyway: concatenate like Ollama does
    (holding at most `max_bytes` of it)."""
    text, thinking, logprobs, final = [], [], [], None
    size = 0
    try:
        async for line in lines:
            size += len(line)
            if size > max_bytes:
                return error_answer("ollama", 502, f"the upstream's answer is larger than {max_bytes} bytes "
                                                   f"(--max-upstream-body)")
            obj = json.loads(line)
            if "error" in obj:
                return error_answer("ollama", 502, obj["error"])
            part = obj.get("message") or obj
            text.append(part.get("content") or part.get("response") or "")
            thinking.append(part.get("thinking") or "")
            logprobs += obj.get("logprobs") or []
            final = obj
    finally:
        await lines.aclose()  # closes the upstream response at once
    if final is None:
        return error_answer("ollama", 502, "the upstream sent an empty answer")
    target = final["message"] if path == "/api/chat" else final
    target["content" if path == "/api/chat" else "response"] = "".join(text)
    if any(thinking):
        target["thinking"] = "".join(thinking)
    if logprobs:
        final["logprobs"] = logprobs
    if repair is not None and path == "/api/chat":
        final = repair.ollama_answer(final, whole=True)
    return JSONResponse(final)


def _show(model: str) -> dict[str, Any]:
    """/api/show for a model of an OpenAI upstream, which tells nothing about it (`model_info` is required)."""
    details = {"parent_model": "", "format": "", "family": "", "families": None, "parameter_size": "",
               "quantization_level": ""}
    return {"modelfile": f"# served by an OpenAI-compatible upstream\nFROM {model}\n", "parameters": "",
            "template": "", "details": details, "model_info": {}, "capabilities": ["completion"]}


async def _pull(upstream: Upstream, name: str, stream: bool) -> Response:
    """An OpenAI-compatible server pulls nothing: a model it lists is present, Ollama's answer for an up-to-date
    model (clients that pull before they chat, as the ollama library's examples do, go on: it was a 501); any
    other name gets Ollama's answer for a pull it cannot do."""
    listing = upstream.last_listing
    if listing is None or listing.entry(name) is None:
        listing = await upstream.list_models()  # a model the server took on since the last listing
    if listing is not None and listing.entry(name) is not None:
        return present(stream)
    return cannot_pull(f"pull model manifest: the upstream {upstream.url} is an OpenAI-compatible server, which "
                       f"does not pull models, and it does not list {name!r}", stream)


def _load_answer(model: str, endpoint: str, keep_alive: float | None) -> Response:
    """Empty prompt / messages: Ollama loads the model, or unloads it for a keep_alive of 0 in any spelling
    (0, "0", "0m", "0s", 0.0: done_reason "unload"); an OpenAI upstream has nothing to load."""
    obj: dict[str, Any] = {"model": model, "created_at": now_rfc3339()}
    obj.update({"message": {"role": "assistant", "content": ""}} if endpoint == "chat" else {"response": ""})
    obj.update(done=True, done_reason="unload" if keep_alive == 0 else "load")
    return JSONResponse(obj)


async def _embeddings_via_openai(upstream: Upstream, path: str, body: dict[str, Any]) -> Response:
    legacy = path == "/api/embeddings"
    inputs = body.get("prompt") if legacy else body.get("input")
    if not inputs:
        return JSONResponse({"embedding": []} if legacy else {"model": body.get("model"), "embeddings": []})
    answer = await embed(upstream, "/v1/embeddings", body, inputs, "ollama")
    if isinstance(answer, Response):
        return answer
    vectors = [d.get("embedding") for d in sorted(answer.get("data") or [], key=lambda d: d.get("index", 0))]
    if legacy:  # Ollama's legacy route: the runner's vector as it is, not normalised
        return JSONResponse({"embedding": vectors[0] if vectors else []})
    vectors = [_normalised(v, body.get("dimensions")) for v in vectors]
    tokens = int((answer.get("usage") or {}).get("prompt_tokens") or 0)
    return JSONResponse({"model": body.get("model"), "embeddings": vectors, "prompt_eval_count": tokens})


def _normalised(vector: Any, dimensions: Any) -> Any:
    """A vector as Ollama's /api/embed returns it: cut to `dimensions` (an upstream may ignore the field),
    then L2-normalised, as clients comparing by dot product rely on (OpenAI servers return them raw:
    llama.cpp's, llama-cpp-python's). A zero vector, or anything that is no list of numbers, stays as it is."""
    if not isinstance(vector, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vector):
        return vector
    if isinstance(dimensions, int) and not isinstance(dimensions, bool) and 0 < dimensions < len(vector):
        vector = vector[:dimensions]
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 and math.isfinite(norm) else vector
