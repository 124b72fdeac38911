"""Through the proxy: thinking written into an OpenAI-compatible upstream's content comes back split
(both client APIs, whole and streamed), and /v1/responses is forwarded to an upstream that has its own
Responses API, or converted to chat for one that has not. Official openai and ollama clients."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import ollama
import openai
import pytest
from proxy_servers import ThreadServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

ANSWER = "<think>\nThe user wants an echo.\n</think>\n\necho: {text}"
THOUGHT = "The user wants an echo."
CANNED = {"id": "resp_upstream1", "object": "response", "created_at": 0, "status": "completed", "model": "m",
          "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                      "content": [{"type": "output_text", "text": "from the upstream", "annotations": []}]}],
          "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}


def thinking_upstream(received: list[tuple[str, dict[str, Any]]], responses_api: bool) -> Starlette:
    """An OpenAI-compatible server without a reasoning parser: the thinking stays in `content`, streamed
    three characters at a time. With `responses_api`, it also has /v1/responses (a canned answer)."""

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "r1", "object": "model", "created": 0, "owned_by": "x"}]})

    async def chat(request: Request) -> Response:
        body = await request.json()
        received.append((request.url.path, body))
        text = ANSWER.format(text=body["messages"][-1]["content"])
        base = {"id": "chatcmpl-1", "created": 0, "model": body["model"]}
        usage = {"prompt_tokens": 4, "completion_tokens": 9, "total_tokens": 13}
        if not body.get("stream"):
            return JSONResponse({**base, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})

        def event(delta: dict[str, Any], finish: str | None = None) -> str:
            chunk = {**base, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(chunk)}\n\n"

        async def events() -> Any:
            yield event({"role": "assistant", "content": ""})
            for i in range(0, len(text), 3):
                yield event({"content": text[i:i + 3]})
            yield event({}, "stop")
            yield f"data: {json.dumps({**base, 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def responses(request: Request) -> Response:
        body = await request.json()
        received.append((request.url.path, body))
        if not body.get("stream"):
            return JSONResponse(CANNED)
        events = [{"type": "response.created", "sequence_number": 0, "response": {**CANNED, "status": "in_progress",
                                                                                   "output": []}},
                  {"type": "response.completed", "sequence_number": 1, "response": CANNED}]
        frames = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
        return Response(frames, media_type="text/event-stream")

    async def not_found(request: Request) -> Response:
        return JSONResponse({"detail": "Not Found"}, status_code=404)

    routes = [Route("/v1/models", models, methods=["GET"]), Route("/v1/chat/completions", chat, methods=["POST"]),
              Route("/api/version", not_found, methods=["GET"])]
    if responses_api:
        routes.append(Route("/v1/responses", responses, methods=["POST"]))
    return Starlette(routes=routes)


@pytest.fixture(params=[False, True], ids=["chat-only", "responses-api"])
def upstream(request) -> Iterator[tuple[ThreadServer, list, bool]]:
    received: list[tuple[str, dict[str, Any]]] = []
    server = ThreadServer(thinking_upstream(received, request.param)).start()
    yield server, received, request.param
    server.stop()


def _openai(proxy: ThreadServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="x", max_retries=0, timeout=30)


@pytest.mark.parametrize("stream", [False, True])
def test_openai_client_gets_reasoning_content(upstream, start_proxy, stream):
    client = _openai(start_proxy(upstream[0].url))
    params = {"model": "r1", "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        chunks = [c for c in client.chat.completions.create(stream=True, **params) if c.choices]
        reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks)
        content = "".join(c.choices[0].delta.content or "" for c in chunks)
    else:
        message = client.chat.completions.create(**params).choices[0].message
        reasoning, content = message.model_extra["reasoning_content"], message.content
    assert reasoning == THOUGHT and content == "echo: hi"
    off = client.chat.completions.create(reasoning_effort="none", **params).choices[0].message
    assert off.content == "echo: hi" and "reasoning_content" not in (off.model_extra or {})


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_client_gets_thinking(upstream, start_proxy, stream):
    client = ollama.Client(host=start_proxy(upstream[0].url).url, timeout=30)
    parts = client.chat(model="r1", messages=[{"role": "user", "content": "hi"}], think=True, stream=stream)
    parts = list(parts) if stream else [parts]
    assert "".join(p.message.thinking or "" for p in parts) == THOUGHT
    assert "".join(p.message.content for p in parts) == "echo: hi"


@pytest.mark.parametrize("stream", [False, True])
def test_responses_forwarded_or_converted(upstream, start_proxy, stream):
    server, received, has_responses_api = upstream
    client = _openai(start_proxy(server.url))
    if stream:
        events = list(client.responses.create(model="r1", input="hi", stream=True))
        assert events[0].type == "response.created" and events[-1].type == "response.completed"
        first = events[-1].response
    else:
        first = client.responses.create(model="r1", input="hi")
    if has_responses_api:  # forwarded as sent, answered by the upstream
        assert first.id == "resp_upstream1" and first.output_text == "from the upstream"
        assert received[-1] == ("/v1/responses", {"model": "r1", "input": "hi", **({"stream": True} if stream else {})})
        return
    assert first.output_text == "echo: hi" and first.output[0].type == "reasoning"
    assert first.output[0].content[0].text == THOUGHT
    second = client.responses.create(model="r1", input="again", previous_response_id=first.id)
    assert second.output_text == "echo: again"
    path, body = received[-1]
    assert path == "/v1/chat/completions" and [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == "echo: hi"
    assert client.responses.retrieve(second.id).output_text == "echo: again"
