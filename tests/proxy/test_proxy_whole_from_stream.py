"""A whole answer asked for, a stream answered: an upstream that streams whatever `stream` says (an OpenAI-compatible
server or an Ollama behind a gateway that always streams). The proxy relayed the stream as it came, so the openai
SDK's whole create returned the SSE text as a str and the ollama client's whole call raised a JSONDecodeError. It
puts the stream back together (velollm/proxy/stream_collapse.py); a stream that breaks is a 502 in the client's
shape, and the server goes on serving."""

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

WORDS = ["the ", "answer ", "is ", "four"]
MESSAGES = [{"role": "user", "content": "2+2?"}]


def _openai_events(model: str, kind: str) -> Iterator[bytes]:
    env = {"id": "chatcmpl-1", "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
           "created": 1, "model": model}
    for word in WORDS:
        choice = {"index": 0, "delta": {"content": word}} if kind == "chat" else {"index": 0, "text": word}
        yield f"data: {json.dumps({**env, 'choices': [{**choice, 'finish_reason': None}]})}\n\n".encode()
        if model == "breaks" and word == "is ":
            yield b'data: {"error": {"message": "the GPU fell over"}}\n\n'
            return
    last = {"index": 0, "delta": {}} if kind == "chat" else {"index": 0, "text": ""}
    yield f"data: {json.dumps({**env, 'choices': [{**last, 'finish_reason': 'stop'}]})}\n\n".encode()
    usage = {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    yield f"data: {json.dumps({**env, 'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode()


def _ollama_lines(model: str, chat: bool) -> Iterator[bytes]:
    head = {"model": model, "created_at": "2025-05-10T08:06:48.639712648-07:00"}
    for word in WORDS:
        part = {"message": {"role": "assistant", "content": word}} if chat else {"response": word}
        yield (json.dumps({**head, **part, "done": False}) + "\n").encode()
        if model == "breaks" and word == "is ":
            yield b'{"error": "the GPU fell over"}\n'
            return
    part = {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
    yield (json.dumps({**head, **part, "done": True, "done_reason": "stop", "prompt_eval_count": 5,
                       "eval_count": 4}) + "\n").encode()


def always_streaming_app(kind: str) -> Starlette:
    """An upstream of `kind` ("openai" or "ollama") serving `steady` and `breaks` that streams every answer."""

    async def answer(request: Request) -> Response:
        body = await request.json()
        path = request.url.path
        if kind == "ollama":
            return StreamingResponse(_ollama_lines(body["model"], path == "/api/chat"),
                                     media_type="application/x-ndjson")
        events = _openai_events(body["model"], "chat" if path == "/v1/chat/completions" else "completion")
        return StreamingResponse(events, media_type="text/event-stream")

    paths = ["/api/chat", "/api/generate"] if kind == "ollama" else ["/v1/chat/completions", "/v1/completions"]
    return Starlette(routes=[*listing_routes(kind, ["steady", "breaks"]),
                             *(Route(p, answer, methods=["POST"]) for p in paths)])


@pytest.fixture(params=["openai", "ollama"])
def proxy(request, start_proxy) -> Iterator[ThreadServer]:
    upstream = ThreadServer(always_streaming_app(request.param)).start()
    yield start_proxy(upstream.url)
    upstream.stop()


def test_the_openai_sdk_gets_the_stream_whole(proxy):
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="x", max_retries=0, timeout=30)
    chat = client.chat.completions.create(model="steady", messages=MESSAGES)
    assert chat.object == "chat.completion"
    assert chat.choices[0].message.content == "".join(WORDS)
    assert chat.choices[0].finish_reason == "stop"
    assert chat.usage.completion_tokens == 4
    completion = client.completions.create(model="steady", prompt="2+2?")
    assert completion.choices[0].text == "".join(WORDS)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="breaks", messages=MESSAGES)
    assert err.value.status_code == 502 and "the GPU fell over" in err.value.message
    streamed = client.chat.completions.create(model="steady", messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "".join(WORDS)


def test_the_ollama_client_gets_the_stream_whole(proxy):
    client = ollama.Client(host=proxy.url, timeout=30)
    chat = client.chat(model="steady", messages=MESSAGES)
    assert chat.done and chat.message.content == "".join(WORDS) and chat.eval_count == 4
    assert client.generate(model="steady", prompt="2+2?").response == "".join(WORDS)
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="breaks", messages=MESSAGES)
    assert err.value.status_code == 502 and "the GPU fell over" in err.value.error
    parts = list(client.chat(model="steady", messages=MESSAGES, stream=True))
    assert "".join(p.message.content for p in parts) == "".join(WORDS) and parts[-1].done
