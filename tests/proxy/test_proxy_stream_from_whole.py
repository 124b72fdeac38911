"""A stream asked for, a whole answer received: an OpenAI-compatible upstream that ignores `stream: true`. The proxy
relayed the JSON body as it came, which the openai SDK read as an SSE stream with no events: an empty answer and no
error. It is sent as a live stream's events (velollm/proxy/whole_as_stream.py)."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from proxy_servers import ThreadServer, listing_routes
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


def never_streaming_app() -> Starlette:
    """An OpenAI-compatible upstream answering every request whole: `plain` text, `caller` a tool call, `failing` an
    error body in a 200."""

    async def answer(request: Request) -> Response:
        body = await request.json()
        model = body["model"]
        if model == "failing":
            return JSONResponse({"error": {"message": "out of memory", "type": "server_error"}})
        head = {"id": "cmpl-1", "created": 1, "model": model, "usage": USAGE}
        if request.url.path == "/v1/completions":
            return JSONResponse({**head, "object": "text_completion",
                                 "choices": [{"index": 0, "text": "two words", "finish_reason": "stop"}]})
        message = {"role": "assistant", "content": None, "tool_calls": [CALL]} if model == "caller" \
            else {"role": "assistant", "content": "two words"}
        finish = "tool_calls" if model == "caller" else "stop"
        return JSONResponse({**head, "object": "chat.completion",
                             "choices": [{"index": 0, "message": message, "finish_reason": finish}]})

    return Starlette(routes=[*listing_routes("openai", ["plain", "caller", "failing"]),
                             Route("/v1/chat/completions", answer, methods=["POST"]),
                             Route("/v1/completions", answer, methods=["POST"])])


@pytest.fixture
def client(start_proxy) -> Iterator[openai.OpenAI]:
    upstream = ThreadServer(never_streaming_app()).start()
    proxy = start_proxy(upstream.url)
    yield openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="x", max_retries=0, timeout=30)
    upstream.stop()


def test_the_openai_sdk_streams_a_whole_answer(client):
    messages = [{"role": "user", "content": "hi"}]
    chunks = list(client.chat.completions.create(model="plain", messages=messages, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "two words"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.total_tokens == 7
    chunks = list(client.chat.completions.create(model="caller", messages=messages, stream=True))
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [("call_1", "get_weather",
                                                                                '{"city": "Oslo"}')]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    texts = [c.choices[0].text for c in client.completions.create(model="plain", prompt="hi", stream=True)]
    assert "".join(texts) == "two words"
    with pytest.raises(openai.APIError, match="out of memory"):
        list(client.chat.completions.create(model="failing", messages=messages, stream=True))
    assert client.chat.completions.create(model="plain", messages=messages).choices[0].message.content == "two words"
