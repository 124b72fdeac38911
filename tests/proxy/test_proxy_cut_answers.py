"""Upstream answers passed through in the client's own API (Ollama to Ollama, OpenAI to OpenAI) that end
badly: a stream closed cleanly in the middle of a line / event, and a whole answer that is no JSON. Both
reach the official clients as errors they can read, never as an answer cut short without one (a cut SSE
event is never dispatched, so the openai SDK's stream just stopped) or a 200 they cannot parse. A stream
whose last message is whole but lacks its final newline still passes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import ollama
import openai
import pytest
from proxy_servers import ThreadServer, listing_routes
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

USER = [{"role": "user", "content": "hi"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]
MODELS = ["cut", "unterminated", "notjson", "garbled"]


def _chunk(model: str, delta: dict, finish: str | None = None) -> str:
    return "data: " + json.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": model,
                                  "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def _line(model: str, text: str, done: bool) -> str:
    return json.dumps({"model": model, "created_at": "2026-01-01T00:00:00Z",
                       "message": {"role": "assistant", "content": text}, "done": done,
                       **({"done_reason": "stop"} if done else {})})


def cutting_upstream(kind: str) -> Starlette:
    """`cut` streams one whole message, then half of the next and ends the response cleanly (the chunked
    terminator sent: no transport error); `unterminated` ends with a whole last message lacking its final
    newline; `notjson` answers a whole request with a truncated JSON body and a 200; `garbled` streams a whole
    message and a whole one that is no JSON in one chunk, then goes on."""

    async def chat(request: Request) -> Response:
        body = await request.json()
        model = body["model"].removesuffix(":latest")
        if model == "notjson":
            return Response(b'{"id": "c1", "choices": [{"message": {"content": "hel', media_type="application/json")
        if kind == "ollama":
            messages = [_line(model, "hello ", False) + "\n"]
            if model == "garbled":  # a whole line, no JSON, in the same chunk as a good one; then more
                messages = [messages[0] + "<html>502 Bad Gateway</html>\n", _line(model, "world", False) + "\n"]
            messages += ['{"model": "cut", "message": {"con'] if model == "cut" else [_line(model, "", True)]
        else:
            messages = [_chunk(model, {"role": "assistant", "content": "hello "}) + "\n\n"]
            if model == "garbled":
                messages = [messages[0] + "data: {'id': 'c1'}\n\n", _chunk(model, {"content": "world"}) + "\n\n"]
            messages += ['data: {"id": "c1", "choi'] if model == "cut" else [
                _chunk(model, {}, "stop") + "\n\n", "data: [DONE]"]

        async def stream() -> Iterator[str]:
            for message in messages:
                yield message

        return StreamingResponse(stream(), media_type="application/x-ndjson" if kind == "ollama" else "text/event-stream")

    return Starlette(routes=[*listing_routes(kind, MODELS),
                             Route("/api/chat", chat, methods=["POST"]),
                             Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture(scope="module", params=["ollama", "openai"])
def upstream(request) -> Iterator[tuple[str, ThreadServer]]:
    server = ThreadServer(cutting_upstream(request.param)).start()
    yield request.param, server
    server.stop()


def test_a_stream_cut_inside_a_message_ends_with_an_error(upstream, start_proxy):
    kind, server = upstream
    proxy = start_proxy(server.url)
    if kind == "openai":
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="x", max_retries=0, timeout=10)
        got = []
        with pytest.raises(openai.APIError, match="the stream ended inside an event"):
            for chunk in client.chat.completions.create(model="cut", messages=USER, stream=True):
                got.append(chunk.choices[0].delta.content)
        assert got == ["hello "]
        chunks = list(client.chat.completions.create(model="unterminated", messages=USER, stream=True))
        assert [c.choices[0].finish_reason for c in chunks] == [None, "stop"]
    else:
        native = ollama.Client(host=proxy.url, timeout=10)
        got = []
        with pytest.raises(ollama.ResponseError, match="the stream ended inside a line"):
            for part in native.chat(model="cut", messages=USER, stream=True):
                got.append(part.message.content)
        assert got == ["hello "]
        parts = list(native.chat(model="unterminated", messages=USER, stream=True))
        assert [p.done for p in parts] == [False, True]


def test_a_whole_message_that_is_no_json_ends_the_stream_with_an_error(upstream, start_proxy):
    """Relayed as it came, the ollama client's json.loads and the openai SDK's failed on it mid-stream, an
    error that is no upstream's; now it is the wire format's error, after the messages before it."""
    kind, server = upstream
    proxy = start_proxy(server.url)
    got = []
    if kind == "openai":
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="x", max_retries=0, timeout=10)
        with pytest.raises(openai.APIError, match="the stream held an event that is not JSON"):
            for chunk in client.chat.completions.create(model="garbled", messages=USER, stream=True):
                got.append(chunk.choices[0].delta.content)
    else:
        native = ollama.Client(host=proxy.url, timeout=10)
        with pytest.raises(ollama.ResponseError, match="the stream held a line that is not JSON"):
            for part in native.chat(model="garbled", messages=USER, stream=True):
                got.append(part.message.content)
    assert got == ["hello "]


@pytest.mark.parametrize("tools", [None, TOOLS], ids=["plain", "tools"])
def test_a_whole_answer_that_is_no_json_is_a_502(upstream, start_proxy, tools):
    """With tools the answer is repaired, from an OpenAI upstream it is split for thinking: both read it whole,
    and passed on what they could not parse."""
    kind, server = upstream
    proxy = start_proxy(server.url)
    extra = {"tools": tools} if tools else {}
    if kind == "openai":
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="x", max_retries=0, timeout=10)
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="notjson", messages=USER, **extra)
        assert err.value.status_code == 502 and "invalid JSON" in err.value.message
    else:
        with pytest.raises(ollama.ResponseError) as oerr:
            ollama.Client(host=proxy.url, timeout=10).chat(model="notjson", messages=USER, stream=False, **extra)
        assert oerr.value.status_code == 502 and "invalid JSON" in oerr.value.error
