"""Huge and broken upstream answers through the real app (issue 12, items 3, 4 and 12): what the proxy
holds is bounded by --max-upstream-body (a clean 502 beyond), relayed answers are not held, a line
with no end is an error and not quadratic work, and an upstream's HTML or broken JSON reaches Ollama
clients in Ollama's error shape. The server keeps serving after each."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import ollama
import openai
import pytest
from proxy_servers import ThreadServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from velollm.proxy.message_buffer import NDJSON_BOUNDARIES, SSE_BOUNDARIES, MessageBuffer, MessageTooLong

LIMIT = 1 << 20  # --max-upstream-body of the proxy under test
BIG = 3 * LIMIT  # bytes of content in the "big" model's answers
MODELS = ["small", "big", "longline", "html", "notjson"]


def _answer(model: str, text: str, done: bool = True) -> dict:
    return {"model": model, "created_at": "2025-01-01T00:00:00Z", "message": {"role": "assistant", "content": text},
            "done": done, **({"done_reason": "stop"} if done else {})}


def misbehaving_ollama() -> Starlette:
    async def version(request: Request) -> Response:
        return JSONResponse({"version": "0.12.0"})

    async def tags(request: Request) -> Response:
        return JSONResponse({"models": [{"name": f"{m}:latest", "model": f"{m}:latest"} for m in MODELS]})

    async def chat(request: Request) -> Response:
        body = await request.json()
        model = body["model"].removesuffix(":latest")
        if model == "html":
            return Response("<html><body><h1>502 Bad Gateway</h1></body></html>", status_code=500,
                            media_type="text/html")
        if model == "notjson":
            return Response(b"{not json", media_type="application/json")
        text = "x" * BIG if model == "big" else "hello"
        if body.get("stream") is False:
            return JSONResponse(_answer(model, text))

        async def lines() -> Iterator[bytes]:
            if model == "longline":  # one line that never ends, in small chunks
                for _ in range(BIG // 1024):
                    yield b"y" * 1024
                return
            yield (json.dumps(_answer(model, text, done=False)) + "\n").encode()
            yield (json.dumps(_answer(model, "", done=True)) + "\n").encode()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return Starlette(routes=[Route("/api/version", version), Route("/api/tags", tags),
                             Route("/api/chat", chat, methods=["POST"])])


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadServer]:
    server = ThreadServer(misbehaving_ollama()).start()
    yield server
    server.stop()


@pytest.fixture
def clients(upstream, start_proxy) -> tuple[ollama.Client, openai.OpenAI]:
    proxy = start_proxy(upstream.url, max_body_bytes=LIMIT)
    return (ollama.Client(host=proxy.url, timeout=60),
            openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="x", max_retries=0, timeout=60))


def _still_serving(native: ollama.Client) -> None:
    assert native.chat(model="small", messages=[{"role": "user", "content": "hi"}], stream=False).message.content == "hello"


def test_converted_answer_over_the_limit_is_a_clean_502(clients):
    native, client = clients
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="big", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 502 and f"larger than {LIMIT} bytes" in err.value.message
    assert err.value.body["type"] == "server_error"  # the OpenAI error shape
    _still_serving(native)


def test_passed_through_answer_over_the_limit_is_relayed_whole(clients):
    native, _ = clients
    answer = native.chat(model="big", messages=[{"role": "user", "content": "hi"}], stream=False)
    assert answer.message.content == "x" * BIG and answer.done  # three times the limit, not held
    _still_serving(native)


def test_endless_line_ends_the_stream_with_an_error(clients):
    native, client = clients
    with pytest.raises(ollama.ResponseError, match=f"longer than {LIMIT} bytes"):
        list(native.chat(model="longline", messages=[{"role": "user", "content": "hi"}], stream=True))
    with pytest.raises(openai.APIError, match=f"longer than {LIMIT} bytes"):
        list(client.chat.completions.create(model="longline", messages=[{"role": "user", "content": "hi"}],
                                            stream=True))
    _still_serving(native)


def test_html_error_page_reaches_ollama_clients_in_ollamas_error_shape(clients):
    native, client = clients
    with pytest.raises(ollama.ResponseError) as err:
        native.chat(model="html", messages=[{"role": "user", "content": "hi"}], stream=False)
    assert err.value.status_code == 500 and err.value.error == "upstream answered 500: (an HTML page)"
    with pytest.raises(openai.InternalServerError, match="an HTML page"):
        client.chat.completions.create(model="html", messages=[{"role": "user", "content": "hi"}])
    _still_serving(native)


def test_invalid_json_answer_is_a_502_in_ollamas_error_shape(clients):
    native, _ = clients
    with pytest.raises(ollama.ResponseError) as err:
        native.chat(model="notjson", messages=[{"role": "user", "content": "hi"}], stream=False)
    assert err.value.status_code == 502 and "invalid JSON" in err.value.error and "{not json" in err.value.error
    _still_serving(native)


def test_message_buffer_is_linear_and_bounded():
    buffer = MessageBuffer(NDJSON_BOUNDARIES, 64 << 20)
    t0 = time.perf_counter()
    for _ in range(16 * 1024):  # a 16 MiB line in 1 KiB chunks: quadratic copying would take minutes
        assert buffer.feed(b"z" * 1024) == b""
    assert buffer.feed(b"end\nnext") == b"z" * (16 << 20) + b"end\n"
    assert time.perf_counter() - t0 < 5
    assert buffer.tail() == b"next" and buffer.tail() == b""
    small = MessageBuffer(NDJSON_BOUNDARIES, 10)
    with pytest.raises(MessageTooLong):
        for _ in range(3):
            small.feed(b"abcd")


def test_message_buffer_finds_boundaries_split_across_chunks():
    sse = MessageBuffer(SSE_BOUNDARIES, 1 << 20)
    assert sse.feed(b"data: 1\n") == b""
    assert sse.feed(b"\ndata: 2\r\n\r") == b"data: 1\n\n"
    assert sse.feed(b"\ndata: 3") == b"data: 2\r\n\r\n"
    assert sse.feed(b"\n\n") == b"data: 3\n\n"
    assert sse.feed(b"data: 4\n\ndata: 5\n\n") == b"data: 4\n\ndata: 5\n\n"  # whole messages: no copy
