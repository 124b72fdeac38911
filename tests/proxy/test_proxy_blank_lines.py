"""Blank lines, "\\r\\n" ends and an unterminated last line in an upstream's streams: Ollama never writes
them, and the ollama library reads each line with json.loads, which raises on an empty one mid-stream.
What the proxy relays or converts is NDJSON as Ollama writes it, every chunk there."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import openai
import pytest
from proxy_servers import ThreadServer, listing_routes
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

WORDS = ["a ", "b ", "c"]
# Between the lines: blank ones, whitespace-only ones, "\r\n" ends; the last line has no newline at all.
SEPARATORS = [b"\n\n", b"\r\n\r\n", b" \t\n\r\n"]


def _line(path: str, text: str, done: bool) -> bytes:
    obj: dict[str, Any] = {"model": "m:latest", "created_at": "2025-01-01T00:00:00Z"}
    if path == "/api/chat":
        obj["message"] = {"role": "assistant", "content": text}
    elif path == "/api/generate":
        obj["response"] = text
    else:  # /api/pull
        obj["status"] = text
    obj["done"] = done
    if done and path != "/api/pull":
        obj.update(done_reason="stop", prompt_eval_count=1, eval_count=len(WORDS))
    return json.dumps(obj).encode()


async def _untidy_ndjson(request: Request) -> StreamingResponse:
    path = request.url.path
    texts = WORDS if path != "/api/pull" else ["pulling manifest", "verifying", "success"]

    async def stream() -> Any:
        yield b"\n"  # a blank first line
        for i, text in enumerate(texts):
            yield _line(path, text, done=path != "/api/pull" and i == len(texts) - 1)
            if i < len(texts) - 1:
                yield SEPARATORS[i]
            await asyncio.sleep(0.01)  # separate chunks: lines and blank lines cross the proxy's buffer

    return StreamingResponse(stream(), media_type="application/x-ndjson")


async def _untidy_sse(request: Request) -> StreamingResponse:
    async def stream() -> Any:
        for i, word in enumerate(WORDS):
            delta = {"index": 0, "delta": {"content": word}, "finish_reason": "stop" if i == len(WORDS) - 1 else None}
            chunk = {"id": "1", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [delta]}
            yield b"\r\n\r\n\n" + b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"
            await asyncio.sleep(0.01)
        yield b"data: [DONE]"

    return StreamingResponse(stream(), media_type="text/event-stream")


def _upstream(kind: str) -> Iterator[ThreadServer]:
    if kind == "ollama":
        routes = [Route(p, _untidy_ndjson, methods=["POST"]) for p in ("/api/chat", "/api/generate", "/api/pull")]
    else:
        routes = [Route("/v1/chat/completions", _untidy_sse, methods=["POST"])]
    server = ThreadServer(Starlette(routes=listing_routes(kind, ["m"]) + routes)).start()
    yield server
    server.stop()


@pytest.fixture
def untidy_ollama() -> Iterator[ThreadServer]:
    yield from _upstream("ollama")


@pytest.fixture
def untidy_openai() -> Iterator[ThreadServer]:
    yield from _upstream("openai")


def _assert_tidy(body: bytes) -> None:
    assert body.endswith(b"\n") and b"\r" not in body
    assert all(line.strip() for line in body.split(b"\n")[:-1]), body


def test_ollama_pass_through_drops_blank_lines(untidy_ollama, start_proxy):
    proxy = start_proxy(untidy_ollama.url, proxy_only=True)
    client = ollama.Client(host=proxy.url)
    chunks = list(client.chat(model="m", messages=[{"role": "user", "content": "x"}], stream=True))
    assert [c.message.content for c in chunks] == WORDS and chunks[-1].done
    chunks = list(client.generate(model="m", prompt="x", stream=True))
    assert [c.response for c in chunks] == WORDS and chunks[-1].done
    progress = list(client.pull("m", stream=True))  # relayed by the model-admin routes
    assert [p.status for p in progress] == ["pulling manifest", "verifying", "success"]
    body = httpx.post(proxy.url + "/api/chat", timeout=10, json={"model": "m", "messages": [{"role": "user", "content": "x"}]}).content
    _assert_tidy(body)
    assert len(body.split(b"\n")) == len(WORDS) + 1


def test_openai_via_ollama_reads_every_chunk(untidy_ollama, start_proxy):
    proxy = start_proxy(untidy_ollama.url, proxy_only=True)
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="x")
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "".join(WORDS)


def test_ollama_via_openai_reads_every_chunk(untidy_openai, start_proxy):
    proxy = start_proxy(untidy_openai.url, proxy_only=True)
    client = ollama.Client(host=proxy.url)
    chunks = list(client.chat(model="m", messages=[{"role": "user", "content": "x"}], stream=True))
    assert "".join(c.message.content for c in chunks) == "".join(WORDS) and chunks[-1].done
    body = httpx.post(proxy.url + "/api/chat", timeout=10, json={"model": "m", "messages": [
        {"role": "user", "content": "x"}]}).content
    _assert_tidy(body)
