"""Starlette handlers that forward one request to the upstream, converting the wire format when needed.

Streams go chunk by chunk; a stream broken mid-way ends with an error line (Ollama) or an error event
and `data: [DONE]` (OpenAI); a client that goes away closes the upstream connection (Starlette cancels
the body iterator, whose `finally` closes the upstream response).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from velollm.errors import InvalidRequest
from velollm.proxy import ollama_via_openai as o2o
from velollm.proxy import openai_via_ollama as o2l
from velollm.proxy.answer_repair import AnswerRepair
from velollm.proxy.sse_repair import OpenAIStreamRepair
from velollm.proxy.message_buffer import NDJSON_BOUNDARIES, SSE_BOUNDARIES
from velollm.proxy.think_split import split_events, split_json, splitter_for
from velollm.proxy.upstream import Upstream, UpstreamBadAnswer, UpstreamUnavailable
from velollm.reasoning.openai_answer import OpenAIAnswerSplit
from velollm.wire.disconnect import ClientDisconnected, cancel_on_disconnect
from velollm.wire.errors import Api, APIError, error_message, error_response
from velollm.wire.framing import ndjson_line
from velollm.wire.streaming import streaming_response
from velollm.wire.timestamps import now_rfc3339

logger = logging.getLogger(__name__)

_STREAM_TYPES = ("text/event-stream", "application/x-ndjson")
VALIDATED_BYTES = 1 << 20  # a passed-through whole answer up to this size is checked to be JSON first


def _error(api: Api, status: int, message: str) -> Response:
    return error_response(api, APIError(status, message))


async def forward(request: Request, upstream: Upstream, api: Api, path: str, body: dict[str, Any],
                  repair: AnswerRepair | None = None) -> Response:
    """Answer `request` (its body already parsed into `body`) from the upstream.

    Until the answer starts streaming, a client that disconnects cancels the upstream request (an
    Ollama answer with stream:false arrives only when the whole generation is done). `repair`: the
    tool calls of a chat answer are repaired against the request's tools (answer_repair.py).
    """
    try:
        return await cancel_on_disconnect(request.receive, _forward(request.method, upstream, api, path, body, repair))
    except UpstreamUnavailable as exc:
        logger.warning("%s %s: %s", request.method, path, exc)
        return _error(api, exc.status_code, str(exc))
    except InvalidRequest as exc:
        return _error(api, 400, str(exc))
    except ClientDisconnected:
        # Nobody reads this: the client is gone (nginx's 499, which Ollama uses too).
        return Response(status_code=499)


async def _forward(method: str, upstream: Upstream, api: Api, path: str, body: dict[str, Any],
                   repair: AnswerRepair | None) -> Response:
    kind = upstream.known_kind or await upstream.kind()
    split = splitter_for(path, body) if kind == "openai" else None  # Ollama splits thinking itself
    if kind == api or upstream.config.speaks_both:
        return await _pass_through(upstream, api, method, path, json.dumps(body).encode(), repair, split)
    if api == "openai":
        return await _openai_via_ollama(upstream, path, body, repair)
    return await _ollama_via_openai(upstream, path, body, repair, split)


# --- same API on both sides -------------------------------------------------------------------


async def _pass_through(upstream: Upstream, api: Api, method: str, path: str, content: bytes,
                        repair: AnswerRepair | None = None, split: OpenAIAnswerSplit | None = None) -> Response:
    response = await upstream.send(method, path, content=content or None)
    media_type = response.headers.get("content-type", "application/json")
    if response.status_code != 200:
        return await _converted_error(upstream, response, api)
    if media_type.startswith(_STREAM_TYPES):
        relay = _relay(upstream, response, api)
        if split is not None:
            relay = split_events(relay, split)
        if repair is not None:
            relay = _repaired_lines(relay, repair) if api == "ollama" else _repaired_events(relay, repair)
        return _streaming(relay, response, media_type)
    if split is None and repair is None:
        return await _relayed_json(upstream, response, media_type)
    data = await upstream.read_body(response)  # rewritten whole: held, within --max-upstream-body
    if split is not None:
        data = split_json(data, split)
    if repair is not None:
        data = repair.json_body(data, api)
    return Response(data, media_type=media_type)


async def _repaired_lines(chunks: AsyncIterator[bytes], repair: AnswerRepair) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        yield repair.ndjson_chunk(chunk)


async def _repaired_events(chunks: AsyncIterator[bytes], repair: AnswerRepair) -> AsyncIterator[bytes]:
    stream = OpenAIStreamRepair(repair)
    async for chunk in chunks:
        out = stream.chunk(chunk)
        if out:
            yield out
    tail = stream.finish()
    if tail:
        yield tail


async def _relay(upstream: Upstream, response: httpx.Response, api: Api) -> AsyncIterator[bytes]:
    # Only whole lines (NDJSON) / events (SSE) are relayed, so that a stream that breaks never leaves
    # half a message before the error. Upstreams send whole messages per chunk: no copy then.
    buffer = upstream.message_buffer(SSE_BOUNDARIES if api == "openai" else NDJSON_BOUNDARIES)
    try:
        async for messages in upstream.iter_messages(response, buffer):
            yield messages
    except UpstreamUnavailable as exc:
        logger.warning("upstream stream broken: %s", exc)
        if api == "openai":
            yield b"".join(o2l.error_events(str(exc)))
        else:
            yield ndjson_line({"error": str(exc)})
    finally:
        await response.aclose()


async def _relayed_json(upstream: Upstream, response: httpx.Response, media_type: str) -> Response:
    """A whole (non-streamed) answer passed through: up to VALIDATED_BYTES it is held and must be JSON
    (else a 502 in the client's shape); a larger one is relayed as it comes, never held whole."""
    chunks = upstream.iter_raw(response)
    head: list[bytes] = []
    size = 0
    try:
        async for chunk in chunks:
            head.append(chunk)
            size += len(chunk)
            if size > VALIDATED_BYTES:
                break
        else:
            data = b"".join(head)
            try:
                json.loads(data)
            except ValueError as exc:
                raise UpstreamBadAnswer(upstream.url, f"invalid JSON: {data[:200]!r}") from exc
            return Response(data, media_type=media_type)
    except BaseException:
        await response.aclose()
        raise

    async def rest() -> AsyncIterator[bytes]:
        try:
            yield b"".join(head)
            async for chunk in chunks:
                yield chunk
        finally:
            await response.aclose()

    return _streaming(rest(), response, media_type)


# --- OpenAI client, Ollama upstream -----------------------------------------------------------


async def _openai_via_ollama(upstream: Upstream, path: str, body: dict[str, Any],
                             repair: AnswerRepair | None) -> Response:
    model = str(body.get("model") or "")
    if path == "/v1/embeddings":
        return await _embeddings_via_ollama(upstream, body)
    if path == "/v1/chat/completions":
        target, converted, whole, stream_type = "/api/chat", o2l.chat_request(body), o2l.chat_response, o2l.ChatStream
    elif path == "/v1/completions":
        target, converted = "/api/generate", o2l.completion_request(body)
        whole, stream_type = o2l.completion_response, o2l.CompletionStream
    else:
        return _error("openai", 404, f"{path} is not available through an Ollama upstream")
    response = await upstream.send("POST", target, json_body=converted)
    if response.status_code != 200:
        return await _converted_error(upstream, response, "openai")
    if not converted["stream"]:
        answer = await _read_json(upstream, response)
        if repair is not None and isinstance(answer, dict):
            answer = repair.ollama_answer(answer, whole=True)
        return JSONResponse(whole(answer, model))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    converter = stream_type(model, include_usage)
    return _streaming(_ndjson_to_sse(upstream, response, converter, repair), response, "text/event-stream")


async def _ndjson_to_sse(upstream: Upstream, response: httpx.Response, converter: Any,
                         repair: AnswerRepair | None = None) -> AsyncIterator[bytes]:
    finished = False
    try:
        async for line in upstream.iter_lines(response):
            if not line.strip():
                continue
            obj = json.loads(line)
            finished = bool(obj.get("done")) or "error" in obj
            if repair is not None and "error" not in obj:
                obj = repair.ollama_answer(obj, whole=False)
            yield b"".join(converter.feed(obj))
            if finished:
                return
        yield b"".join(converter.error("the upstream ended the stream early"))
    except UpstreamUnavailable as exc:
        logger.warning("upstream stream broken: %s", exc)
        if not finished:
            yield b"".join(converter.error(str(exc)))
    except ValueError as exc:
        yield b"".join(converter.error(f"the upstream sent invalid JSON: {exc}"))
    finally:
        await response.aclose()


async def _embed(upstream: Upstream, path: str, body: dict[str, Any], inputs: Any, api: Api) -> Any:
    """An embedding request sent upstream (`path`): its parsed answer, or its error in `api`'s shape."""
    converted: dict[str, Any] = {"model": body.get("model"), "input": inputs}
    if body.get("dimensions"):
        converted["dimensions"] = body["dimensions"]
    response = await upstream.send("POST", path, json_body=converted)
    if response.status_code != 200:
        return await _converted_error(upstream, response, api)
    return await _read_json(upstream, response)


async def _embeddings_via_ollama(upstream: Upstream, body: dict[str, Any]) -> Response:
    answer = await _embed(upstream, "/api/embed", body, body.get("input"), "openai")
    if isinstance(answer, Response):
        return answer
    data = [{"object": "embedding", "embedding": e, "index": i} for i, e in enumerate(answer.get("embeddings") or [])]
    tokens = int(answer.get("prompt_eval_count") or 0)
    return JSONResponse({"object": "list", "data": data, "model": body.get("model"),
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


# --- Ollama client, OpenAI upstream -----------------------------------------------------------


async def _ollama_via_openai(upstream: Upstream, path: str, body: dict[str, Any],
                             repair: AnswerRepair | None, split: OpenAIAnswerSplit | None = None) -> Response:
    model = str(body.get("model") or "")
    if path in ("/api/embed", "/api/embeddings"):
        return await _embeddings_via_openai(upstream, path, body)
    if path == "/api/show":
        return JSONResponse(_show(model))
    if path == "/api/chat":
        if not body.get("messages"):
            return _load_answer(model, "chat", body)
        target, converted = "/v1/chat/completions", o2o.chat_request(body)
    elif path == "/api/generate":
        if not body.get("prompt") and not body.get("images"):
            return _load_answer(model, "generate", body)
        target, converted = o2o.generate_request(body)
    else:
        return _error("ollama", 501, f"{path} is not available through an OpenAI-compatible upstream")
    converter = o2o.NdjsonAnswer(model, "chat" if path == "/api/chat" else "generate")
    response = await upstream.send("POST", target, json_body=converted)
    if response.status_code != 200:
        return await _converted_error(upstream, response, "ollama")
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        answer = await _read_json(upstream, response)
        if split is not None and isinstance(answer, dict):
            answer = split.completion(answer)
        if repair is not None and isinstance(answer, dict):
            answer = repair.openai_answer(answer)
        obj = converter.whole(answer)
        if converted["stream"]:
            return Response(ndjson_line(obj), media_type="application/x-ndjson")
        return JSONResponse(obj)
    if converted["stream"]:
        return _streaming(_sse_to_ndjson(upstream, response, converter, repair, split), response,
                          "application/x-ndjson")
    return await _collapse(_sse_to_ndjson(upstream, response, converter, split=split), path,
                           upstream.config.max_body_bytes, repair)


async def _sse_to_ndjson(upstream: Upstream, response: httpx.Response, converter: o2o.NdjsonAnswer,
                         repair: AnswerRepair | None = None,
                         split: OpenAIAnswerSplit | None = None) -> AsyncIterator[bytes]:
    """`repair`: the calls, which arrive whole on the final line, are repaired there."""

    def final() -> bytes:
        obj = converter.final()
        return ndjson_line(repair.ollama_answer(obj, whole=False) if repair is not None else obj)

    try:
        async for line in upstream.iter_lines(response):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                yield final()
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
            yield final()
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
                return _error("ollama", 502, f"the upstream's answer is larger than {max_bytes} bytes "
                                             f"(--max-upstream-body)")
            obj = json.loads(line)
            if "error" in obj:
                return _error("ollama", 502, obj["error"])
            part = obj.get("message") or obj
            text.append(part.get("content") or part.get("response") or "")
            thinking.append(part.get("thinking") or "")
            logprobs += obj.get("logprobs") or []
            final = obj
    finally:
        await lines.aclose()  # closes the upstream response at once
    if final is None:
        return _error("ollama", 502, "the upstream sent an empty answer")
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


def _load_answer(model: str, endpoint: str, body: dict[str, Any]) -> Response:
    """Empty prompt / messages: Ollama loads (or unloads) the model; an OpenAI upstream has nothing to load."""
    reason = "unload" if body.get("keep_alive") in (0, "0", "0s") else "load"
    obj: dict[str, Any] = {"model": model, "created_at": now_rfc3339()}
    obj.update({"message": {"role": "assistant", "content": ""}} if endpoint == "chat" else {"response": ""})
    obj.update(done=True, done_reason=reason)
    return JSONResponse(obj)


async def _embeddings_via_openai(upstream: Upstream, path: str, body: dict[str, Any]) -> Response:
    legacy = path == "/api/embeddings"
    inputs = body.get("prompt") if legacy else body.get("input")
    if not inputs:
        return JSONResponse({"embedding": []} if legacy else {"model": body.get("model"), "embeddings": []})
    answer = await _embed(upstream, "/v1/embeddings", body, inputs, "ollama")
    if isinstance(answer, Response):
        return answer
    vectors = [d.get("embedding") for d in sorted(answer.get("data") or [], key=lambda d: d.get("index", 0))]
    if legacy:
        return JSONResponse({"embedding": vectors[0] if vectors else []})
    tokens = int((answer.get("usage") or {}).get("prompt_tokens") or 0)
    return JSONResponse({"model": body.get("model"), "embeddings": vectors, "prompt_eval_count": tokens})


# --- shared -----------------------------------------------------------------------------------


def _streaming(body: AsyncIterator[bytes], upstream_response: httpx.Response, media_type: str) -> StreamingResponse:
    # The body's `finally` closes the upstream response, but a client gone before the first chunk
    # means the body never starts: the background task closes it then (closing twice is harmless).
    return streaming_response(body, media_type, background=BackgroundTask(upstream_response.aclose))


async def _read_json(upstream: Upstream, response: httpx.Response) -> Any:
    data = await upstream.read_body(response)
    try:
        return json.loads(data)
    except ValueError as exc:
        raise UpstreamBadAnswer(upstream.url, f"invalid JSON: {data[:200]!r}") from exc


async def _converted_error(upstream: Upstream, response: httpx.Response, api: Api) -> Response:
    """An upstream error status passed on in the client's error shape: a body already in that shape as
    it is; any other (the other API's, HTML, broken JSON) turned into it, its text as the message."""
    data = await upstream.read_body(response)
    try:
        body = json.loads(data)
    except ValueError:
        text = data.decode("utf-8", "replace").strip()
        if text.startswith("<"):  # an error page of a server or proxy in front of the upstream
            text = "(an HTML page)"
        return _error(api, response.status_code, f"upstream answered {response.status_code}: {text[:500]}"
                      if text else f"upstream answered {response.status_code}")
    error = body.get("error") if isinstance(body, dict) else None
    if (isinstance(error, dict) and isinstance(error.get("message"), str)) if api == "openai" else isinstance(error, str):
        return Response(data, status_code=response.status_code, media_type="application/json")
    return _error(api, response.status_code, error_message(body))

