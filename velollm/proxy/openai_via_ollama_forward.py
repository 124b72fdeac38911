"""OpenAI client, Ollama upstream: /v1/chat/completions, /v1/completions and /v1/embeddings sent to
/api/chat, /api/generate and /api/embed, the answers (whole or NDJSON streams) turned into OpenAI's
(whole or SSE). The formats themselves: openai_via_ollama.py."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.responses import JSONResponse, Response

from velollm.errors import InvalidRequest
from velollm.proxy import openai_via_ollama as o2l
from velollm.proxy.answer_repair import AnswerRepair
from velollm.proxy.forced_tool_call import as_call, forced_tools
from velollm.proxy.stream_collapse import whole_ollama_answer
from velollm.proxy.upstream import Upstream, UpstreamUnavailable
from velollm.proxy.upstream_answer import converted_error, embed, error_answer, streaming
from velollm.wire.embedding_base64 import ENCODING_FORMATS, float32_base64

logger = logging.getLogger(__name__)


async def openai_via_ollama(upstream: Upstream, path: str, body: dict[str, Any],
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
        return error_answer("openai", 404, f"{path} is not available through an Ollama upstream")
    response = await upstream.send("POST", target, json_body=converted)
    if response.status_code != 200:
        return await converted_error(upstream, response, "openai")
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    if not converted["stream"]:
        answer = await whole_ollama_answer(upstream, response, target)
        if path == "/v1/chat/completions" and isinstance(answer, dict) and forced_tools(body):
            answer = as_call(answer)
        if repair is not None and isinstance(answer, dict):
            answer = repair.ollama_answer(answer, whole=True)
        if body.get("stream") and isinstance(answer, dict):  # a forced call, asked for streamed: one chunk
            events = stream_type(model, include_usage).feed({**answer, "done": True})
            return Response(b"".join(events), media_type="text/event-stream")
        return JSONResponse(whole(answer, model))
    converter = stream_type(model, include_usage)
    return streaming(_ndjson_to_sse(upstream, response, converter, repair), response, "text/event-stream")


async def _ndjson_to_sse(upstream: Upstream, response: httpx.Response, converter: Any,
                         repair: AnswerRepair | None = None) -> AsyncIterator[bytes]:
    finished = False
    try:
        async for line in upstream.iter_lines(response):
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


async def _embeddings_via_ollama(upstream: Upstream, body: dict[str, Any]) -> Response:
    """Ollama's /api/embed answers float arrays; an OpenAI client asking base64 (the openai SDK's default) gets
    them encoded, as it would from OpenAI (an explicit base64 is handed back undecoded by the SDK)."""
    fmt = body.get("encoding_format") or "float"
    if fmt not in ENCODING_FORMATS:
        raise InvalidRequest(f"encoding_format must be one of {list(ENCODING_FORMATS)}", param="encoding_format")
    answer = await embed(upstream, "/api/embed", body, body.get("input"), "openai")
    if isinstance(answer, Response):
        return answer
    vectors = answer.get("embeddings") or []
    if fmt == "base64":
        vectors = [float32_base64(e) for e in vectors]
    data = [{"object": "embedding", "embedding": e, "index": i} for i, e in enumerate(vectors)]
    tokens = int(answer.get("prompt_eval_count") or 0)
    return JSONResponse({"object": "list", "data": data, "model": body.get("model"),
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
