"""Through the real API app (no native model) to a fake Ollama, with the official `ollama` and `openai` clients."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import numpy as np
import ollama
import openai
import pytest
from proxy_servers import ThreadServer, fake_ollama_app
from starlette.responses import Response

from tests.fast_enough import assert_fast

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def _clients(proxy: ThreadServer) -> tuple[ollama.Client, openai.OpenAI]:
    return (ollama.Client(host=proxy.url, timeout=10),
            openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="x", max_retries=0, timeout=10))


def test_native_api_forwarded_faithfully(fake_ollama, ollama_state, start_proxy):
    client, _ = _clients(start_proxy(fake_ollama.url))
    answer = client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi there"}])
    assert answer.message.content == "echo: hi there "
    assert answer.done_reason == "stop" and answer.eval_count == 3
    # The body reaches the upstream as the client sent it (the ollama client always sends tools/stream).
    assert ollama_state.requests[-1] == ("/api/chat", {"model": "llama3.2", "stream": False, "tools": [],
                                                       "messages": [{"role": "user", "content": "hi there"}]})
    parts = list(client.generate(model="llama3.2", prompt="a b c", stream=True, options={"num_predict": 2}))
    assert [p.response for p in parts] == ["echo: ", "a ", ""]
    assert parts[-1].done and parts[-1].done_reason == "length" and parts[-1].context == [1, 2, 3]


def test_openai_chat_converted_to_ollama(fake_ollama, ollama_state, start_proxy):
    _, client = _clients(start_proxy(fake_ollama.url))
    answer = client.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "hi there"}],
                                            max_tokens=2, seed=7, stop="zz")
    assert answer.choices[0].message.content == "echo: hi "
    assert answer.choices[0].finish_reason == "length"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (2, 2)
    path, sent = ollama_state.requests[-1]
    assert path == "/api/chat" and sent["stream"] is False
    assert sent["options"] == {"temperature": 1.0, "top_p": 1.0, "num_predict": 2, "seed": 7, "stop": ["zz"]}

    chunks = list(client.chat.completions.create(model="llama3.2", stream=True,
                                                 stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": "hi there"}]))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hi there "
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3


def test_openai_tool_calls_have_string_arguments(fake_ollama, ollama_state, start_proxy):
    _, client = _clients(start_proxy(fake_ollama.url))
    history = [{"role": "user", "content": "weather please"},
               {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
               {"role": "user", "content": "and the weather in Tokyo?"}]
    answer = client.chat.completions.create(model="llama3.2", messages=history, tools=[WEATHER_TOOL])
    call = answer.choices[0].message.tool_calls[0]
    assert answer.choices[0].finish_reason == "tool_calls"
    assert (call.id, call.type, call.function.name) == ("call_ab12cd34", "function", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Tokyo"}
    sent = ollama_state.requests[-1][1]["messages"]
    assert sent[1]["tool_calls"] == [{"id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]
    assert sent[2] == {"role": "tool", "content": "sunny", "tool_name": "get_weather", "tool_call_id": "call_1"}

    chunks = list(client.chat.completions.create(model="llama3.2", messages=history, tools=[WEATHER_TOOL], stream=True))
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1 and json.loads(calls[0].function.arguments) == {"city": "Tokyo"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_legacy_functions_reach_ollama_as_tools_and_come_back_as_function_call(fake_ollama, ollama_state,
                                                                              start_proxy):
    """`functions` (which Ollama ignores) reach /api/chat as tools, the old history as tool calls and results;
    Ollama's tool call comes back as `function_call` (whole and streamed), as OpenAI answers such a request.
    (llama-cpp-python's server as the upstream, with a forced call: tests/proxy/test_proxy_llama_cpp.py.)"""
    _, client = _clients(start_proxy(fake_ollama.url))
    history = [{"role": "user", "content": "weather please"},
               {"role": "assistant", "content": None, "function_call": {"name": "get_weather",
                                                                        "arguments": "{\"city\": \"Oslo\"}"}},
               {"role": "function", "name": "get_weather", "content": "sunny"},
               {"role": "user", "content": "and the weather in Tokyo?"}]
    functions = [WEATHER_TOOL["function"]]
    answer = client.chat.completions.create(model="llama3.2", messages=history, functions=functions)
    choice = answer.choices[0]
    assert choice.finish_reason == "function_call" and choice.message.tool_calls is None
    assert choice.message.function_call.name == "get_weather"
    assert json.loads(choice.message.function_call.arguments) == {"city": "Tokyo"}
    sent = ollama_state.requests[-1][1]
    assert sent["tools"] == [WEATHER_TOOL] and "functions" not in sent
    assert sent["messages"][1]["tool_calls"] == [{"id": "call_fn_1", "function": {"name": "get_weather",
                                                                                   "arguments": {"city": "Oslo"}}}]
    assert sent["messages"][2]["role"] == "tool" and sent["messages"][2]["tool_name"] == "get_weather"

    chunks = list(client.chat.completions.create(model="llama3.2", messages=history, functions=functions,
                                                 stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert all(d.tool_calls is None for d in deltas)
    calls = [d.function_call for d in deltas if d.function_call]
    assert "".join(c.name or "" for c in calls) == "get_weather"
    assert json.loads("".join(c.arguments or "" for c in calls)) == {"city": "Tokyo"}
    assert chunks[-1].choices[0].finish_reason == "function_call"


def test_openai_completions_and_embeddings(fake_ollama, ollama_state, start_proxy):
    _, client = _clients(start_proxy(fake_ollama.url))
    answer = client.completions.create(model="llama3.2", prompt="hello", max_tokens=5)
    assert answer.choices[0].text == "echo: hello " and answer.choices[0].finish_reason == "stop"
    assert ollama_state.requests[-1][1]["raw"] is True
    text = "".join(c.choices[0].text for c in client.completions.create(model="llama3.2", prompt="x y", stream=True)
                   if c.choices)
    assert text == "echo: x y "
    vectors = client.embeddings.create(model="llama3.2", input=["a", "b"])  # the SDK asks base64, decodes it
    assert [[round(x, 6) for x in d.embedding] for d in vectors.data] == [[0.6, 0.8], [0.6, 0.8]]
    vectors = client.embeddings.create(model="llama3.2", input="a", encoding_format="float")
    assert [d.embedding for d in vectors.data] == [[0.6, 0.8]]
    vectors = client.embeddings.create(model="llama3.2", input="a", encoding_format="base64")  # handed back as is
    assert np.frombuffer(base64.b64decode(vectors.data[0].embedding), "<f4").tolist() == pytest.approx([0.6, 0.8])
    with pytest.raises(openai.BadRequestError, match="encoding_format must be one of") as err:
        client.embeddings.create(model="llama3.2", input="a", encoding_format="int8")  # type: ignore[arg-type]
    assert err.value.body["param"] == "encoding_format"


def test_listings_and_unknown_model(fake_ollama, start_proxy):
    native, client = _clients(start_proxy(fake_ollama.url))
    assert [m.id for m in client.models.list()] == ["llama3.2:latest", "gated:latest", "broken:latest", "slow:latest"]
    assert next(m.model for m in native.list().models) == "llama3.2:latest"
    with pytest.raises(openai.NotFoundError, match="nope"):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(ollama.ResponseError) as err:
        native.chat(model="nope", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 404 and err.value.error == "model 'nope' not found"


def test_upstream_error_status_passes_through(fake_ollama, start_proxy):
    native, client = _clients(start_proxy(fake_ollama.url, proxy_only=True))
    with pytest.raises(ollama.ResponseError) as err:
        native.generate(model="ghost", prompt="x")
    assert err.value.status_code == 404 and err.value.error == "model 'ghost' not found"
    with pytest.raises(openai.NotFoundError, match="model 'ghost' not found"):
        client.chat.completions.create(model="ghost", messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize("api", ["ollama", "openai"])
def test_first_chunk_arrives_before_upstream_finishes(fake_ollama, ollama_state, start_proxy, api):
    proxy = start_proxy(fake_ollama.url)
    path, body = (("/api/chat", {"model": "gated", "messages": [{"role": "user", "content": "a b"}]}) if api == "ollama"
                  else ("/v1/chat/completions", {"model": "gated", "stream": True,
                                                 "messages": [{"role": "user", "content": "a b"}]}))
    with httpx.Client(timeout=5) as http, http.stream("POST", proxy.url + path, json=body) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line)
        # The upstream is still blocked on the gate, so this chunk was relayed on its own.
        assert not ollama_state.gate.is_set()
        ollama_state.gate.set()
        rest = [line for line in lines if line]
    if api == "ollama":
        assert json.loads(first)["message"]["content"] == "echo: " and json.loads(rest[-1])["done"] is True
    else:
        assert json.loads(first[6:])["choices"][0]["delta"]["content"] == "echo: " and rest[-1] == "data: [DONE]"


def test_stream_broken_midway_ends_with_error(fake_ollama, start_proxy):
    proxy = start_proxy(fake_ollama.url)
    native, client = _clients(proxy)
    with pytest.raises(ollama.ResponseError, match="unreachable"):
        list(native.chat(model="broken", messages=[{"role": "user", "content": "a b c"}], stream=True))
    lines = httpx.post(proxy.url + "/api/generate", json={"model": "broken", "prompt": "a b c"}, timeout=5).text.splitlines()
    assert [json.loads(x).get("response") for x in lines[:2]] == ["echo: ", "a "] and "error" in json.loads(lines[2])
    events = httpx.post(proxy.url + "/v1/chat/completions", timeout=5, json={
        "model": "broken", "stream": True, "messages": [{"role": "user", "content": "a b c"}]}).text.split("\n\n")
    assert "error" in json.loads(events[-3][6:]) and events[-2] == "data: [DONE]"
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="broken", stream=True, messages=[{"role": "user", "content": "a b c"}]))


def test_client_disconnect_cancels_upstream(fake_ollama, ollama_state, start_proxy):
    proxy = start_proxy(fake_ollama.url)
    with httpx.Client(timeout=5) as http, http.stream("POST", proxy.url + "/api/generate",
                                                      json={"model": "slow", "prompt": "a"}) as response:
        assert next(response.iter_lines())
    assert ollama_state.cancelled.wait(3), "the upstream kept generating for a client that left"


def test_client_disconnect_before_the_answer_cancels_upstream(fake_ollama, ollama_state, start_proxy):
    """The client leaves once the upstream generates its answer (not after a fixed time: on a loaded machine the
    request may not have reached the upstream yet, and then there is nothing to cancel)."""
    proxy = start_proxy(fake_ollama.url)

    async def leave_while_generating() -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            request = asyncio.ensure_future(
                http.post(proxy.url + "/api/generate", json={"model": "slow", "prompt": "a", "stream": False}))
            deadline = time.monotonic() + 30
            while not any(body.get("model") == "slow" for _, body in ollama_state.requests):
                assert time.monotonic() < deadline and not request.done(), "the request never reached the upstream"
                await asyncio.sleep(0.01)
            request.cancel()  # the connection closes before the answer
            await asyncio.gather(request, return_exceptions=True)

    asyncio.run(leave_while_generating())
    assert ollama_state.cancelled.wait(3), "the upstream kept generating for a client that left"


def test_upstream_down_gives_fast_502_then_recovers(fake_ollama, ollama_state, start_proxy):
    proxy = start_proxy(fake_ollama.url)
    native, client = _clients(proxy)
    assert native.chat(model="llama3.2", messages=[{"role": "user", "content": "x"}]).message.content == "echo: x "
    fake_ollama.stop()

    def refused() -> None:
        with pytest.raises(ollama.ResponseError) as err:
            native.chat(model="llama3.2", messages=[{"role": "user", "content": "x"}])
        assert err.value.status_code == 502 and fake_ollama.url in err.value.error
        with pytest.raises(openai.InternalServerError) as oerr:
            client.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "x"}])
        assert oerr.value.status_code == 502 and fake_ollama.url in oerr.value.message

    assert_fast(refused, 2)  # no retry or timeout waited out: one try of three within 2 s
    # The listing stays available from the last successful one.
    assert next(m.model for m in native.list().models) == "llama3.2:latest"
    restarted = ThreadServer(fake_ollama_app(ollama_state), port=fake_ollama.port).start()
    try:
        assert client.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "y"}]
                                              ).choices[0].message.content == "echo: y "
    finally:
        restarted.stop()


def test_upstream_started_after_proxy(ollama_state, start_proxy):
    late = ThreadServer(fake_ollama_app(ollama_state)).start()
    late.stop()  # keep its port, free
    proxy = start_proxy(late.url, proxy_only=True)
    native, _ = _clients(proxy)
    with pytest.raises(ollama.ResponseError) as err:
        native.chat(model="llama3.2", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 502
    late.start()
    try:
        assert native.chat(model="llama3.2", messages=[{"role": "user", "content": "x"}]).message.content == "echo: x "
    finally:
        late.stop()


def test_upstream_failing_at_the_first_request_is_still_taken_for_ollama(ollama_state, start_proxy):
    """An Ollama behind a reverse proxy that answers 502 while it restarts: the API probe (/api/version) says
    nothing then, and is made again by the next request; it was taken for an OpenAI server for good, so every
    /api request went to /v1 (a 404 here) until VeloLLM restarted."""
    inner = fake_ollama_app(ollama_state)
    restarting = True

    async def behind_nginx(scope, receive, send):
        if restarting and scope["type"] == "http":
            await Response("<html><body>502 Bad Gateway</body></html>", status_code=502, media_type="text/html")(
                scope, receive, send)
            return
        await inner(scope, receive, send)

    upstream = ThreadServer(behind_nginx).start()
    try:
        native, _ = _clients(start_proxy(upstream.url, proxy_only=True))
        with pytest.raises(ollama.ResponseError) as err:
            native.chat(model="llama3.2", messages=[{"role": "user", "content": "x"}])
        assert err.value.status_code == 502 and "/api/version answered 502" in err.value.error
        restarting = False
        assert native.chat(model="llama3.2", messages=[{"role": "user", "content": "x"}]).message.content == "echo: x "
        assert ollama_state.requests[-1][0] == "/api/chat"
    finally:
        upstream.stop()


def test_openai_pass_through_broken_midway(start_proxy):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    async def chat(request):
        async def events():
            yield b'data: {"id":"1","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}\n\ndata: {"id"'
            raise RuntimeError("upstream crashed")
        return StreamingResponse(events(), media_type="text/event-stream")

    async def not_found(request):
        return JSONResponse({"detail": "Not Found"}, status_code=404)

    upstream = ThreadServer(Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                                              Route("/api/version", not_found)])).start()
    try:
        proxy = start_proxy(upstream.url, proxy_only=True)
        text = httpx.post(proxy.url + "/v1/chat/completions", timeout=5, json={
            "model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]}).text
        events = text.split("\n\n")
        # The half-written event is dropped; the error event and [DONE] follow the whole ones.
        assert json.loads(events[0][6:])["choices"][0]["delta"]["content"] == "a"
        assert "unreachable" in json.loads(events[1][6:])["error"]["message"] and events[2:] == ["data: [DONE]", ""]
    finally:
        upstream.stop()


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_openai_max_tokens_below_one_is_a_400_not_an_unlimited_answer(fake_ollama, ollama_state, start_proxy, field):
    """max_tokens 0 or -1 went to Ollama as num_predict 0 / -1, which is no limit: an answer to the end of the
    context where a native model (and OpenAI) answer 400; 2.5 went up as is. Nothing reaches the upstream."""
    _, client = _clients(start_proxy(fake_ollama.url))
    kw = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi there"}]}
    before = len(ollama_state.requests)
    for bad in (0, -1, 2.5):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(**kw, extra_body={field: bad})
        assert err.value.body["param"] == field
        with pytest.raises(openai.BadRequestError):
            client.completions.create(model="llama3.2", prompt="a b", extra_body={field: bad})
    for n in (0, -1, 1.5):  # n 0 was one answer
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(**kw, extra_body={field: 2, "n": n})
        assert err.value.body["param"] == "n"
    assert len(ollama_state.requests) == before
    client.chat.completions.create(**kw, extra_body={field: 2})
    assert ollama_state.requests[-1][1]["options"]["num_predict"] == 2


def test_vllm_constraint_keys_become_format_or_a_400(fake_ollama, ollama_state, start_proxy):
    """vLLM's guided_json / structured_outputs.json were dropped on the way to an Ollama upstream (an
    unconstrained answer); they are its `format`. A regex, choice or grammar, which Ollama cannot constrain to,
    is a 400 naming the key, and nothing reaches the upstream."""
    _, client = _clients(start_proxy(fake_ollama.url))
    kw = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 2}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    for extra in ({"guided_json": schema}, {"structured_outputs": {"json": json.dumps(schema)}}):
        client.chat.completions.create(**kw, extra_body=extra)
        assert ollama_state.requests[-1][1]["format"] == schema
    client.chat.completions.create(**kw, extra_body={"structured_outputs": {"json_object": True}})
    assert ollama_state.requests[-1][1]["format"] == "json"
    before = len(ollama_state.requests)
    for extra, param in (({"guided_choice": ["a", "b"]}, "guided_choice"), ({"guided_regex": "a+"}, "guided_regex"),
                         ({"structured_outputs": {"grammar": "root ::= \"a\""}}, "structured_outputs.grammar")):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(**kw, extra_body=extra)
        assert err.value.body["param"] == param
    assert len(ollama_state.requests) == before


WRONG_TYPES = [("temperature", "hot", "a number, got str"), ("top_p", [1], "a number, got list"),
               ("presence_penalty", True, "a number, got bool"), ("seed", "7", "an integer, got str"),
               ("seed", 1.5, "an integer, got 1.5")]


@pytest.mark.parametrize(("field", "value", "must_be"), WRONG_TYPES)
def test_a_sampling_field_of_the_wrong_type_is_a_400_before_ollama(fake_ollama, ollama_state, start_proxy, field,
                                                                   value, must_be):
    """The openai SDK's field of another type was sent to Ollama as an option, which Ollama refuses with a 500
    (`option "temperature" must be of type float32`); a native model's route answers a 400 naming the field. The
    proxy answers that 400, in the same words, and sends nothing; numbers go on."""
    _, client = _clients(start_proxy(fake_ollama.url))
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="llama3.2", messages=messages, extra_body={field: value})
    assert err.value.body["message"] == f"{field} must be {must_be}" and err.value.body["param"] == field
    assert not ollama_state.requests
    client.chat.completions.create(model="llama3.2", messages=messages, extra_body={field: 1.0})
    assert ollama_state.requests[-1][1]["options"][field] == 1
