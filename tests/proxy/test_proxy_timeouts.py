"""A slow upstream through the real app: no first byte within --upstream-first-byte-timeout is a 504, a stream
that pauses past --upstream-idle-timeout ends with an error; both say the upstream was too slow, not that it
could not be reached, in each client's format."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import ollama
import openai
import pytest
from proxy_servers import ThreadServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

USER = [{"role": "user", "content": "hi"}]
TIMEOUT_S = 0.5


def slow_ollama() -> Starlette:
    """`late` answers after 5 s; `stalls` streams one line, then nothing for 5 s."""

    async def version(request: Request) -> Response:
        return JSONResponse({"version": "0.12.0"})

    async def tags(request: Request) -> Response:
        return JSONResponse({"models": [{"name": "late:latest", "model": "late:latest"},
                                        {"name": "stalls:latest", "model": "stalls:latest"}]})

    async def chat(request: Request) -> Response:
        model = (await request.json())["model"].removesuffix(":latest")
        if model == "late":
            await asyncio.sleep(5)

        async def lines() -> Iterator[str]:
            yield json.dumps({"model": model, "message": {"role": "assistant", "content": "a"}, "done": False}) + "\n"
            await asyncio.sleep(5)
            yield json.dumps({"model": model, "message": {"role": "assistant", "content": ""}, "done": True}) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return Starlette(routes=[Route("/api/version", version), Route("/api/tags", tags),
                             Route("/api/chat", chat, methods=["POST"])])


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadServer]:
    server = ThreadServer(slow_ollama()).start()
    yield server
    server.stop()


def test_no_first_byte_in_time_is_a_504_that_says_so(upstream, start_proxy):
    proxy = start_proxy(upstream.url, first_byte_timeout=TIMEOUT_S)
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=proxy.url, timeout=10).chat(model="late", messages=USER)
    assert err.value.status_code == 504
    assert err.value.error == f"upstream {upstream.url} did not answer in time: no response within {TIMEOUT_S:g} s"
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="x", max_retries=0, timeout=10)
    with pytest.raises(openai.APIStatusError, match="did not answer in time") as oerr:
        client.chat.completions.create(model="late", messages=USER)
    assert oerr.value.status_code == 504


def test_a_stream_that_stalls_ends_with_an_error_that_says_so(upstream, start_proxy):
    proxy = start_proxy(upstream.url, idle_timeout=TIMEOUT_S)
    got = []
    with pytest.raises(ollama.ResponseError, match=f"did not answer in time: no data for {TIMEOUT_S:g} s"):
        for part in ollama.Client(host=proxy.url, timeout=10).chat(model="stalls", messages=USER, stream=True):
            got.append(part.message.content)
    assert got == ["a"]
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="x", max_retries=0, timeout=10)
    with pytest.raises(openai.APIError, match="did not answer in time"):
        list(client.chat.completions.create(model="stalls", messages=USER, stream=True))
