"""An upstream's 429 / 503 reaches the client with its Retry-After, whichever API each side speaks: the
openai SDK waits what it says before retrying (without it, its own short backoff hammers an upstream
that asked for time), and a VeloLLM or Ollama upstream whose queue is full says it with a 503."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from proxy_servers import ThreadServer, listing_routes
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

USER = [{"role": "user", "content": "hi"}]


def busy_upstream(kind: str) -> Starlette:
    """Every generation is refused: `limited` with a 429 and `Retry-After: 7`, `full` with a 503 and
    `retry-after-ms: 1500`, each body in the upstream's own error shape."""

    async def refuse(request: Request) -> Response:
        model = (await request.json())["model"].removesuffix(":latest")
        status, headers = (429, {"retry-after": "7"}) if model == "limited" else (503, {"retry-after-ms": "1500"})
        message = "rate limit reached" if status == 429 else "server busy, please try again"
        body = {"error": message} if kind == "ollama" else {"error": {"message": message, "type": "requests",
                                                                      "param": None, "code": None}}
        return JSONResponse(body, status_code=status, headers=headers)

    return Starlette(routes=[*listing_routes(kind, ["limited", "full"]),
                             Route("/api/chat", refuse, methods=["POST"]),
                             Route("/v1/chat/completions", refuse, methods=["POST"])])


@pytest.fixture(scope="module", params=["ollama", "openai"])
def upstream(request) -> Iterator[ThreadServer]:
    server = ThreadServer(busy_upstream(request.param)).start()
    yield server
    server.stop()


def test_the_openai_sdk_sees_the_upstreams_retry_after(upstream, start_proxy):
    proxy = start_proxy(upstream.url)
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="x", max_retries=0, timeout=10)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="limited", messages=USER)
    assert err.value.response.headers["retry-after"] == "7" and err.value.body["message"] == "rate limit reached"
    with pytest.raises(openai.InternalServerError) as busy:
        client.chat.completions.create(model="full", messages=USER, stream=True)
    assert busy.value.status_code == 503 and busy.value.response.headers["retry-after-ms"] == "1500"


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_clients_see_it_too(upstream, start_proxy, stream):
    proxy = start_proxy(upstream.url)
    answer = httpx.post(f"{proxy.url}/api/chat", json={"model": "limited", "messages": USER, "stream": stream},
                        timeout=10)
    assert answer.status_code == 429 and answer.headers["retry-after"] == "7"
    assert answer.json() == {"error": "rate limit reached"}
