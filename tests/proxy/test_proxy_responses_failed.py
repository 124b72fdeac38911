"""/v1/responses run on an upstream's chat route (an Ollama, an OpenAI-compatible server such as llama.cpp's, a
VeloLLM found by the kind probe) when that chat stream fails mid-answer: the Response ends as a VeloLLM's own
Responses API ends it, with an `error` event (the upstream's code: engine_dead) and `response.failed`, and the
failed response is stored (GET says failed and why, the item the error cut incomplete). The ways a chat stream
fails: an error line (Ollama NDJSON) or error event (OpenAI SSE), llama.cpp's `error:` field (read by no SSE
client: the Response said completed), the connection dropped. A whole answer that fails is the upstream's error
status in OpenAI's shape, 502 when the connection dropped."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from proxy_servers import ThreadServer, listing_routes, velollm_server
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.api.stub_engine import StubEngine
from velollm.errors import EngineDead

DIED = "the engine of 'demo' stopped (test); restart the server"
# (upstream kind, model): how its chat stream fails after two pieces of text
FAILURES = [("ollama", "dies"), ("ollama", "drops"), ("openai", "dies"), ("openai", "llamacpp"), ("openai", "drops")]


def _ollama_line(model: str, text: str) -> str:
    return json.dumps({"model": model, "created_at": "2026-01-01T00:00:00Z",
                       "message": {"role": "assistant", "content": text}, "done": False}) + "\n"


def _openai_event(model: str, text: str) -> str:
    choices = [{"index": 0, "delta": {"content": text}, "finish_reason": None}]
    return "data: " + json.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": model,
                                  "choices": choices}) + "\n\n"


def _end(kind: str, model: str) -> str:
    """How the stream ends: `dies` with the error a VeloLLM upstream sends when its engine dies (Ollama's line
    and OpenAI's event, both with code engine_dead), `llamacpp` as llama.cpp's server ends a failed stream."""
    if model == "llamacpp":
        return 'error: {"code": 500, "message": "the slot failed", "type": "server_error"}\n\ndata: [DONE]\n\n'
    if kind == "ollama":
        return json.dumps({"error": DIED, "code": "engine_dead"}) + "\n"
    error = {"message": DIED, "type": "server_error", "param": None, "code": "engine_dead"}
    return f"data: {json.dumps({'error': error})}\n\ndata: [DONE]\n\n"


def failing_upstream(kind: str) -> Starlette:
    """An upstream whose chat streams send "hello " and "wor", then fail as the model name says (`drops`: the
    connection drops). A whole answer of `drops` drops the connection inside its body."""

    async def chat(request: Request) -> Response:
        body = await request.json()
        model = body["model"].removesuffix(":latest")
        whole = body.get("stream") is False or (kind == "openai" and not body.get("stream"))
        stream_type = "application/x-ndjson" if kind == "ollama" else "text/event-stream"
        media_type = "application/json" if whole else stream_type
        piece = _ollama_line if kind == "ollama" else _openai_event

        async def stream() -> Iterator[str]:
            if whole:
                yield '{"id": "c1", "choices": [{"message": {"content": "hel'
                raise RuntimeError("the upstream crashed")
            for text in ("hello ", "wor"):
                yield piece(model, text)
                await asyncio.sleep(0.01)
            if model == "drops":
                raise RuntimeError("the upstream crashed")
            yield _end(kind, model)

        return StreamingResponse(stream(), media_type=media_type)

    return Starlette(routes=[*listing_routes(kind, ["dies", "drops", "llamacpp"]),
                             Route("/api/chat", chat, methods=["POST"]),
                             Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, ThreadServer]]:
    """One failing upstream of each kind."""
    servers = {kind: ThreadServer(failing_upstream(kind)).start() for kind in ("ollama", "openai")}
    yield servers
    for server in servers.values():
        server.stop()


def _sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=30)


def _failed_stream(client: openai.OpenAI, model: str) -> list[Any]:
    events = list(client.responses.create(model=model, input="hi", stream=True))
    assert [e.type for e in events[-2:]] == ["error", "response.failed"], [e.type for e in events]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "hello wor"
    return events


def _expected(model: str) -> tuple[str, str]:
    """The (code, message part) the Response's error carries."""
    if model == "dies":
        return "engine_dead", DIED
    if model == "llamacpp":
        return "server_error", "the slot failed"
    return "server_error", "unreachable"


@pytest.mark.parametrize("kind,model", FAILURES, ids=[f"{k}-{m}" for k, m in FAILURES])
def test_a_chat_stream_that_fails_ends_the_response_failed_and_stored(upstreams, start_proxy, kind, model):
    client = _sdk(start_proxy(upstreams[kind].url).url)
    events = _failed_stream(client, model)
    code, message = _expected(model)
    error, failed = events[-2], events[-1].response
    assert error.code == code and message in error.message
    assert failed.status == "failed" and failed.error.code == code and message in failed.error.message
    assert [(o.status, o.content[0].text) for o in failed.output] == [("incomplete", "hello wor")]
    stored = client.responses.retrieve(failed.id)  # a 404 before: a failed response was not kept
    assert stored.status == "failed" and stored.error.code == code and message in stored.error.message
    assert [(o.status, o.content[0].text) for o in stored.output] == [("incomplete", "hello wor")]


def test_llama_cpps_error_field_reaches_a_chat_client(upstreams, start_proxy):
    """The chat stream passed through: llama.cpp's `error:` field, which the openai SDK does not read (the stream
    just stopped, no error), goes on as OpenAI's error event, which it raises."""
    proxy = start_proxy(upstreams["openai"].url)
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.APIError, match="the slot failed"):
        list(_sdk(proxy.url).chat.completions.create(model="llamacpp", messages=messages, stream=True))
    text = httpx.post(f"{proxy.url}/v1/chat/completions", timeout=30,
                      json={"model": "llamacpp", "stream": True, "messages": messages}).text
    events = text.split("\n\n")
    assert json.loads(events[-3][6:])["error"] == {"message": "the slot failed", "type": "server_error",
                                                   "param": None, "code": None}
    assert events[-2:] == ["data: [DONE]", ""]


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_a_whole_answer_cut_by_a_dropped_connection_is_a_502(upstreams, start_proxy, kind):
    client = _sdk(start_proxy(upstreams[kind].url).url)
    with pytest.raises(openai.InternalServerError) as err:
        client.responses.create(model="drops", input="hi")
    assert err.value.status_code == 502 and "unreachable" in err.value.body["message"]


class DyingEngine(StubEngine):
    """A stub engine whose generation dies after three tokens (EngineDead, as when a real engine's thread dies)."""

    async def _deltas(self, prompt, params, request_id):
        num_tokens = 0
        async for delta in super()._deltas(prompt, params, request_id):
            yield delta
            num_tokens += 1
            if num_tokens == 3:
                raise EngineDead(DIED)


@pytest.fixture
def dying_velollm() -> Iterator[ThreadServer]:
    server = velollm_server(DyingEngine())
    yield server
    server.stop()


def test_a_velollm_upstreams_dying_engine_fails_the_response_as_its_own_api(dying_velollm, start_proxy):
    """Through a proxy that found the VeloLLM by the kind probe (the Response runs on its chat route and is kept
    here): the same ending as the VeloLLM's own Responses API gives, and the response kept as failed."""
    upstream = _sdk(dying_velollm.url)
    own = list(upstream.responses.create(model="demo", input="hi", max_output_tokens=50, stream=True))
    assert upstream.responses.retrieve(own[-1].response.id).status == "failed"  # kept there too
    client = _sdk(start_proxy(dying_velollm.url).url)
    events = list(client.responses.create(model="demo", input="hi", max_output_tokens=50, stream=True))
    assert [e.type for e in events[-2:]] == [e.type for e in own[-2:]] == ["error", "response.failed"]
    assert events[-2].code == own[-2].code == "engine_dead" and events[-2].message == own[-2].message == DIED
    stored = client.responses.retrieve(events[-1].response.id)
    assert stored.status == "failed" and stored.error.code == "engine_dead" and stored.output[0].status == "incomplete"
    with pytest.raises(openai.APIStatusError) as err:  # whole: the VeloLLM's 503 engine_dead, as its own API answers
        client.responses.create(model="demo", input="hi", max_output_tokens=50)
    assert err.value.status_code == 503 and err.value.body["code"] == "engine_dead"


def test_error_fields_as_data_rewrites_only_an_event_of_error_lines():
    from velollm.proxy.sse_error_field import error_fields_as_data

    kept = b'data: {"a": 1}\r\n\r\n'
    with_data = b'error: x\ndata: {"b": 2}\n\n'  # an event with data is the data's, whatever else it holds
    chunk = kept + b"error: not json\n\n" + with_data
    error = b'data: {"error":{"message":"not json","type":"server_error","param":null,"code":null}}\n\n'
    assert error_fields_as_data(chunk) == kept + error + with_data
    assert error_fields_as_data(kept + with_data) == kept + with_data
