"""Starlette handlers that forward one request to the upstream: the same API on both sides passes
through here; the other way round, openai_via_ollama_forward.py and ollama_via_openai_forward.py convert.

Streams go chunk by chunk; a stream broken mid-way ends with an error line (Ollama) or an error event
and `data: [DONE]` (OpenAI); a client that goes away closes the upstream connection (Starlette cancels
the body iterator, whose `finally` closes the upstream response).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from velollm.errors import InvalidRequest
from velollm.proxy import openai_via_ollama as o2l
from velollm.proxy.answer_repair import AnswerRepair
from velollm.proxy.message_buffer import NDJSON_BOUNDARIES, SSE_BOUNDARIES, tidy_lines
from velollm.proxy.ollama_via_openai_forward import ollama_via_openai
from velollm.proxy.openai_via_ollama_forward import openai_via_ollama
from velollm.proxy.schema_format import send_with_schema
from velollm.proxy.sse_error_field import error_fields_as_data
from velollm.proxy.sse_repair import OpenAIStreamRepair
from velollm.proxy.stream_collapse import asks_whole, collapsed
from velollm.proxy.think_split import split_events, split_json, splitter_for
from velollm.proxy.upstream import Upstream, UpstreamBadAnswer, UpstreamUnavailable
from velollm.proxy.upstream_answer import converted_error, error_answer, streaming
from velollm.proxy.whole_as_stream import asks_events, sse_body
from velollm.reasoning.openai_answer import OpenAIAnswerSplit
from velollm.wire.disconnect import (
    STATUS_CLIENT_CLOSED,
    ClientDisconnected,
    cancel_on_disconnect,
)
from velollm.wire.errors import Api
from velollm.wire.framing import ndjson_line, sse_data

logger = logging.getLogger(__name__)

_STREAM_TYPES = ("text/event-stream", "application/x-ndjson")
VALIDATED_BYTES = 1 << 20  # a passed-through whole answer up to this size is checked to be JSON first


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
        return error_answer(api, exc.status_code, str(exc))
    except InvalidRequest as exc:
        return error_answer(api, 400, str(exc), exc.param)
    except ClientDisconnected:
        return Response(status_code=STATUS_CLIENT_CLOSED)


async def _forward(method: str, upstream: Upstream, api: Api, path: str, body: dict[str, Any],
                   repair: AnswerRepair | None) -> Response:
    kind = upstream.known_kind or await upstream.kind()
    split = splitter_for(path, body) if kind == "openai" else None  # Ollama splits thinking itself
    if kind == api or upstream.speaks_both:
        return await _pass_through(upstream, api, method, path, body, repair, split)
    if api == "openai":
        return await openai_via_ollama(upstream, path, body, repair)
    return await ollama_via_openai(upstream, path, body, repair, split)


async def _pass_through(upstream: Upstream, api: Api, method: str, path: str, body: dict[str, Any],
                        repair: AnswerRepair | None = None, split: OpenAIAnswerSplit | None = None) -> Response:
    if api == "openai" and method == "POST":  # a json_schema response_format the upstream refuses goes again
        response = await send_with_schema(upstream, path, body)
    else:
        response = await upstream.send(method, path, content=json.dumps(body).encode())
    media_type = response.headers.get("content-type", "application/json")
    if response.status_code != 200:
        return await converted_error(upstream, response, api)
    if media_type.startswith(_STREAM_TYPES):
        relay = relay_stream(upstream, response, api)
        if split is not None:
            relay = split_events(relay, split)
        if repair is not None:
            relay = _repaired_lines(relay, repair) if api == "ollama" else _repaired_events(relay, repair)
        if asks_whole(api, path, body):  # streamed all the same: the client reads one JSON body, not a stream
            return await collapsed(relay, response, api, path, media_type, upstream.config.max_body_bytes)
        return streaming(relay, response, media_type)
    events = api == "openai" and asks_events(path, body)  # a stream asked for, a whole answer received
    if split is None and repair is None and not events:
        return await _relayed_json(upstream, response, media_type)
    data = await upstream.read_body(response)  # rewritten whole: held, within --max-upstream-body
    _json_or_bad_answer(upstream, data)
    if split is not None:
        data = split_json(data, split)
    if repair is not None:
        data = repair.json_body(data, api)
    if events:
        return Response(sse_body(json.loads(data), path, body), media_type="text/event-stream")
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


async def relay_stream(upstream: Upstream, response: httpx.Response, api: Api) -> AsyncIterator[bytes]:
    """An upstream stream relayed message by message, closed at the end; a break ends it with an error, and so
    does a message that is no JSON (the client's parser would fail on it mid-stream, with no error it can read).
    An NDJSON stream's blank lines are left out and its "\r\n" ends made "\n", as Ollama writes it; llama.cpp's
    `error:` event goes on as OpenAI's error event (sse_error_field.py)."""
    # Only whole lines (NDJSON) / events (SSE) are relayed, so that a stream that breaks never leaves
    # half a message before the error. Upstreams send whole messages per chunk: no copy then.
    buffer = upstream.message_buffer(SSE_BOUNDARIES if api == "openai" else NDJSON_BOUNDARIES)
    try:
        async for messages in upstream.iter_messages(response, buffer):
            if not messages.endswith(buffer.boundaries):  # the last one, unterminated: the stream ended in it
                messages = _whole_tail(upstream, messages, api)
            bad = _first_unreadable(messages, api)
            whole = messages if bad is None else messages[:bad]  # the whole messages before a bad one
            whole = tidy_lines(whole) if api == "ollama" else error_fields_as_data(whole)
            if whole:
                yield whole
            if bad is not None:
                what = "an event" if api == "openai" else "a line"
                raise UpstreamBadAnswer(upstream.url, f"the stream held {what} that is not JSON: "
                                                      f"{_message_at(messages, bad, api)[:200]!r}")
    except UpstreamUnavailable as exc:
        logger.warning("upstream stream broken: %s", exc)
        if api == "openai":
            yield b"".join(o2l.error_events(str(exc)))
        else:
            yield ndjson_line({"error": str(exc)})
    finally:
        await response.aclose()


_MESSAGE_ENDS = {"openai": re.compile(rb"\r?\n\r?\n"), "ollama": re.compile(rb"\n")}


def _first_unreadable(messages: bytes, api: Api) -> int | None:
    """Where the first message of `messages` (whole lines / events) that a client cannot parse starts; None
    when each is JSON, [DONE] (SSE), blank, or an SSE comment."""
    start = 0
    for end in _MESSAGE_ENDS[api].finditer(messages):
        if not _readable(messages[start:end.start()], api):
            return start
        start = end.end()
    return None


def _message_at(messages: bytes, start: int, api: Api) -> bytes:
    end = _MESSAGE_ENDS[api].search(messages, start)
    return messages[start:end.start() if end else len(messages)].strip()


def _readable(message: bytes, api: Api) -> bool:
    """Whether a client's parser takes one whole line / event: its JSON (an SSE event's data), [DONE], or
    nothing a client reads (blank, an SSE comment)."""
    data = sse_data(message) if api == "openai" else message.strip()
    if not data or (api == "openai" and data == b"[DONE]"):
        return True
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def _whole_tail(upstream: Upstream, tail: bytes, api: Api) -> bytes:
    """A stream's unterminated last message: terminated when it is whole (an upstream that leaves out the last
    newline), an UpstreamBadAnswer when the stream ended inside it. Relayed as it came, a cut SSE event is never
    dispatched (the SSE spec drops an event without its blank line): the openai SDK's stream then just stops,
    an answer cut short with no error; a cut NDJSON line is a JSONDecodeError in the ollama client."""
    text = tail.strip()
    if not _readable(text, api):
        what = "an event" if api == "openai" else "a line"
        raise UpstreamBadAnswer(upstream.url, f"the stream ended inside {what}: {text[:200]!r}")
    if not (sse_data(text) if api == "openai" else text):  # blank, or an SSE comment: nothing a client reads
        return b""
    return text + (b"\n\n" if api == "openai" else b"\n")


def _json_or_bad_answer(upstream: Upstream, data: bytes) -> None:
    """A whole answer passed on must be JSON: anything else is a 502 in the client's shape (a 200 that is no
    JSON is a JSONDecodeError in the official clients, not an error they can read)."""
    try:
        json.loads(data)
    except ValueError as exc:
        raise UpstreamBadAnswer(upstream.url, f"invalid JSON: {data[:200]!r}") from exc


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
            _json_or_bad_answer(upstream, data)
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

    return streaming(rest(), response, media_type)
