"""Malformed tool calls from the upstream reach the clients repaired (velollm/proxy/answer_repair.py).

Scripted fake upstreams (one Ollama, one OpenAI-compatible) answer with the calls a test sets; the
real API app stands in front, and the official clients read the answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import openai
import pytest
from proxy_servers import ThreadServer, velollm_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from velollm.tools.tool_parsers import ToolFamily
from velollm.proxy.answer_repair import AnswerRepair, family_for_model
from velollm.proxy.upstream import UpstreamConfig

MODEL = "qwen-up"
USER = [{"role": "user", "content": "weather in Tokyo for 3 days?"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "forecast",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}]
EXPECTED = {"city": "Tokyo", "days": 3}
BROKEN_ARGS = "{'city': 'Tokyo', 'days': '3',}"  # single quotes, trailing comma, "3" for an integer
FENCED = 'Sure!\n```json\n{"name": "get_weather", "arguments": {"city": "Tokyo", "days": "3",}}\n```'


class Script:
    """What the fake upstream answers next: content, OpenAI-shaped calls, finish reason."""

    def __init__(self) -> None:
        self.content = ""
        self.calls: list[dict[str, Any]] = []
        self.bodies: list[dict[str, Any]] = []

    def set(self, content: str = "", calls: list[dict[str, Any]] | None = None) -> None:
        self.content, self.calls = content, calls or []


def openai_call(name: str, arguments: str, call_id: str = "call_up1") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def fake_openai_app(script: Script) -> Starlette:
    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 1,
                                                         "owned_by": "up"}]})

    async def chat(request: Request) -> Response:
        body = await request.json()
        script.bodies.append(body)
        finish = "tool_calls" if script.calls else "stop"
        usage = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
        if not body.get("stream"):
            message = {"role": "assistant", "content": script.content or None}
            if script.calls:
                message["tool_calls"] = script.calls
            return JSONResponse({"id": "x", "object": "chat.completion", "created": 1, "model": MODEL,
                                 "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                                 "usage": usage})

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
            return _sse({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})

        def events() -> Iterator[str]:
            yield chunk({"role": "assistant", "content": script.content})
            for i, call in enumerate(script.calls):  # name first, then the arguments in two fragments
                args = call["function"]["arguments"]
                yield chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                             "function": {"name": call["function"]["name"], "arguments": ""}}]})
                for part in (args[: len(args) // 2], args[len(args) // 2:]):
                    yield chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]})
            yield chunk({}, finish)
            yield _sse({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": MODEL, "choices": [],
                        "usage": usage})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"])])


def fake_ollama_app(script: Script) -> Starlette:
    """Ollama's shape: arguments as objects (strings when the script's are no JSON), calls whole."""

    async def version(request: Request) -> Response:
        return JSONResponse({"version": "0.12.0"})

    async def tags(request: Request) -> Response:
        return JSONResponse({"models": [{"name": f"{MODEL}:latest", "model": f"{MODEL}:latest", "size": 1,
                                         "digest": "ab" * 32, "modified_at": "2025-05-10T08:06:48Z",
                                         "details": {"format": "gguf", "family": "qwen2"}}]})

    def calls() -> list[dict[str, Any]]:
        out = []
        for i, call in enumerate(script.calls):
            args = call["function"]["arguments"]
            try:
                args = json.loads(args)
            except ValueError:
                pass
            out.append({"function": {"index": i, "name": call["function"]["name"], "arguments": args}})
        return out

    async def chat(request: Request) -> Response:
        body = await request.json()
        script.bodies.append(body)

        def line(content: str, done: bool, tool_calls: Any = None) -> dict[str, Any]:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if tool_calls:
                message["tool_calls"] = tool_calls
            obj = {"model": body["model"], "created_at": "2025-05-10T08:06:48Z", "message": message, "done": done}
            if done:
                obj.update(done_reason="stop", total_duration=10, load_duration=1, prompt_eval_count=5,
                           prompt_eval_duration=2, eval_count=7, eval_duration=3)
            return obj

        if body.get("stream") is False:
            return JSONResponse(line(script.content, True, calls()))
        lines = [line(script.content, False)] + ([line("", False, calls())] if script.calls else []) + [line("", True)]
        return Response("".join(json.dumps(obj) + "\n" for obj in lines), media_type="application/x-ndjson")

    return Starlette(routes=[Route("/api/version", version), Route("/api/tags", tags),
                             Route("/api/chat", chat, methods=["POST"])])


@pytest.fixture(params=["openai", "ollama"])
def setup(request: pytest.FixtureRequest) -> Iterator[tuple[Script, ThreadServer, str]]:
    script = Script()
    app = fake_openai_app(script) if request.param == "openai" else fake_ollama_app(script)
    upstream = ThreadServer(app).start()
    server = ThreadServer(velollm_app(UpstreamConfig(url=upstream.url, kind=request.param))).start()
    yield script, server, request.param
    server.stop()
    upstream.stop()


def clients(server: ThreadServer) -> tuple[openai.OpenAI, ollama.Client]:
    return (openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=10),
            ollama.Client(host=server.url, timeout=10))


def openai_streamed_calls(client: openai.OpenAI) -> tuple[dict[str, Any], str | None]:
    args: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in client.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS, stream=True):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for d in choice.delta.tool_calls or []:
                slot = args.setdefault(d.index, {"name": "", "arguments": ""})
                slot["name"] += d.function.name or ""
                slot["arguments"] += d.function.arguments or ""
    assert len(args) == 1
    return args[0], finish


def test_malformed_call_arguments_are_repaired(setup):
    script, server, kind = setup
    script.set(calls=[openai_call("get_weather", BROKEN_ARGS)])
    oai, native = clients(server)

    choice = oai.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS).choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == EXPECTED
    assert script.bodies[-1]["tools"]  # the tools went to the upstream, converted or not

    message = native.chat(model=MODEL, messages=USER, tools=TOOLS).message
    assert [(c.function.name, dict(c.function.arguments)) for c in message.tool_calls] == [("get_weather", EXPECTED)]
    parts = list(native.chat(model=MODEL, messages=USER, tools=TOOLS, stream=True))
    streamed = [c for p in parts for c in p.message.tool_calls or []]
    assert [dict(c.function.arguments) for c in streamed] == [EXPECTED] and parts[-1].done

    # Ollama streams send calls whole; OpenAI streams' argument fragments are held back and sent repaired.
    call, finish = openai_streamed_calls(oai)
    assert finish == "tool_calls" and json.loads(call["arguments"]) == EXPECTED and call["name"] == "get_weather"

    metrics = httpx.get(f"{server.url}/metrics").text
    assert f'velollm_tool_calls_total{{model="{MODEL}",outcome="repaired"}}' in metrics


def test_call_leaked_into_content_becomes_a_call(setup):
    script, server, _ = setup
    script.set(content=FENCED)
    oai, native = clients(server)

    choice = oai.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Sure!"
    assert json.loads(choice.message.tool_calls[0].function.arguments) == EXPECTED

    message = native.chat(model=MODEL, messages=USER, tools=TOOLS).message
    assert message.content == "Sure!" and dict(message.tool_calls[0].function.arguments) == EXPECTED

    # Without tools nothing is parsed: the same answer stays text.
    plain = oai.chat.completions.create(model=MODEL, messages=USER).choices[0]
    assert plain.message.content == FENCED and not plain.message.tool_calls and plain.finish_reason == "stop"


def test_unknown_tool_is_not_a_call_and_not_dropped(setup):
    script, server, _ = setup
    script.set(calls=[openai_call("delete_everything", '{"really": true}')])
    oai, native = clients(server)

    choice = oai.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS).choices[0]
    assert not choice.message.tool_calls and choice.finish_reason == "stop"
    assert "delete_everything" in choice.message.content

    message = native.chat(model=MODEL, messages=USER, tools=TOOLS).message
    assert not message.tool_calls and "delete_everything" in message.content


def test_valid_calls_keep_their_id_and_only_the_first_with_parallel_calls_off():
    repair = AnswerRepair.for_request("/v1/chat/completions", {"model": "m", "tools": TOOLS,
                                                                 "parallel_tool_calls": False})
    answer = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None,
        "tool_calls": [openai_call("get_weather", '{"city": "Oslo"}', "call_a"),
                       openai_call("get_weather", '{"city": "Rome"}', "call_b")]}}]}
    [choice] = repair.openai_answer(answer)["choices"]
    assert [(c["id"], json.loads(c["function"]["arguments"])) for c in choice["message"]["tool_calls"]] == [
        ("call_a", {"city": "Oslo"})]
    assert AnswerRepair.for_request("/v1/chat/completions", {"model": "m", "tools": TOOLS, "tool_choice": "none"}) is None
    assert AnswerRepair.for_request("/v1/completions", {"model": "m", "tools": TOOLS}) is None
    # Tools VeloLLM cannot read are the upstream's to judge: no repair rather than a 400.
    assert AnswerRepair.for_request("/api/chat", {"model": "m", "tools": [{"type": "function"}]}) is None


def test_family_from_the_model_name():
    assert family_for_model("llama3.2:latest") is ToolFamily.LLAMA3
    assert family_for_model("hf.co/org/Mistral-Nemo") is ToolFamily.MISTRAL
    assert family_for_model("qwen3:8b") is ToolFamily.HERMES


def _streamed(client: openai.OpenAI) -> tuple[str, dict[int, dict[str, str]], str | None, Any]:
    content, calls, finish, usage = "", {}, None, None
    for chunk in client.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS, stream=True,
                                                stream_options={"include_usage": True}):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
            for d in choice.delta.tool_calls or []:
                slot = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] += d.id or ""
                slot["name"] += d.function.name or ""
                slot["arguments"] += d.function.arguments or ""
    return content, calls, finish, usage


@pytest.fixture
def openai_setup() -> Iterator[tuple[Script, ThreadServer]]:
    script = Script()
    upstream = ThreadServer(fake_openai_app(script)).start()
    server = ThreadServer(velollm_app(UpstreamConfig(url=upstream.url, kind="openai"))).start()
    yield script, server
    server.stop()
    upstream.stop()


def test_openai_stream_calls_held_back_then_sent_whole(openai_setup):
    script, server = openai_setup
    oai, _ = clients(server)
    # Valid calls keep the upstream's ids and arrive whole, one delta each, after the content.
    script.set(content="Checking.", calls=[openai_call("get_weather", '{"city": "Oslo"}', "call_a"),
                                           openai_call("get_weather", '{"city": "Rome", "days": 2}', "call_b")])
    content, calls, finish, usage = _streamed(oai)
    assert content == "Checking." and finish == "tool_calls" and usage.completion_tokens == 7
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("call_a", "get_weather", {"city": "Oslo"}), ("call_b", "get_weather", {"city": "Rome", "days": 2})]
    # A call to a tool that was never offered becomes text, and the answer an ordinary stop.
    script.set(calls=[openai_call("delete_everything", '{"really": true}')])
    content, calls, finish, _ = _streamed(oai)
    assert not calls and finish == "stop" and "delete_everything" in content
    # Without tools nothing is held back: the upstream's fragments pass as they came.
    script.set(calls=[openai_call("get_weather", BROKEN_ARGS)])
    raw = httpx.post(f"{server.url}/v1/chat/completions", json={"model": MODEL, "messages": USER, "stream": True},
                     timeout=10).text
    assert raw.count('"tool_calls": [') == 3 and json.dumps(BROKEN_ARGS[:9])[1:-1] in raw  # unrepaired


def test_stream_repair_flushes_calls_of_a_stream_that_never_finished():
    from velollm.proxy.sse_repair import OpenAIStreamRepair

    repair = AnswerRepair.for_request("/v1/chat/completions", {"model": "m", "tools": TOOLS})
    stream = OpenAIStreamRepair(repair)
    head = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events = [_sse({**head, "choices": [{"index": 0, "delta": {"tool_calls": [
                  {"index": 0, "id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]},
                  "finish_reason": None}]}),
              _sse({**head, "choices": [{"index": 0, "delta": {"tool_calls": [
                  {"index": 0, "function": {"arguments": BROKEN_ARGS}}]}, "finish_reason": None}]})]
    assert stream.chunk("".join(events).encode()) == b""  # held back
    out = (stream.chunk(b"data: [DONE]\n\n") + stream.finish()).decode()
    chunks = [json.loads(e[6:]) for e in out.split("\n\n") if e.startswith("data: {")]
    [call] = chunks[0]["choices"][0]["delta"]["tool_calls"]
    assert call["id"] == "c1" and json.loads(call["function"]["arguments"]) == EXPECTED
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls" and out.endswith("data: [DONE]\n\n")
