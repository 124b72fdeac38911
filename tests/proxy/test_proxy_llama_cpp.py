"""A real OpenAI-compatible upstream: llama-cpp-python's server on a tiny random GGUF, on a random port."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import jsonschema
import ollama
import openai
import pytest
from gguf_fixture import write_tiny_llama_gguf
from proxy_servers import ThreadServer, velollm_app

from tests.fast_enough import assert_fast
from tests.llama_cpp_ref import child_env
from velollm.proxy.upstream import UpstreamConfig

pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")

MODEL = "tiny-llama"
MESSAGES = [{"role": "user", "content": "the cat sat on"}]


class LlamaServer:
    def __init__(self, model_path: str) -> None:
        self.model_path = model_path
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.llama_cpp_ref", "server", "--model", self.model_path, "--model_alias", MODEL,
             "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "512", "--n_threads", "1",
             "--verbose", "False"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/v1/models", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
            if self.process.poll() is not None:
                break
        raise RuntimeError("llama_cpp.server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory) -> Iterator[LlamaServer]:
    server = LlamaServer(str(write_tiny_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(llama_server) -> Iterator[ThreadServer]:
    """Through the real API app (no native model)."""
    server = ThreadServer(velollm_app(UpstreamConfig(url=llama_server.url))).start()
    yield server
    server.stop()


def _openai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=30)


def test_openai_sdk_gets_the_same_answers(llama_server, proxy):
    direct, through = _openai(llama_server.url), _openai(proxy.url)
    params = {"model": MODEL, "messages": MESSAGES, "temperature": 0, "max_tokens": 16}
    want = direct.chat.completions.create(**params)
    got = through.chat.completions.create(**params)
    assert got.choices[0].message.content == want.choices[0].message.content
    assert got.choices[0].finish_reason == want.choices[0].finish_reason
    assert got.usage.completion_tokens == want.usage.completion_tokens > 0

    def streamed(client: openai.OpenAI) -> list[str]:
        return [c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **params)
                if c.choices]

    # (llama-cpp-python's own streams drop characters split across tokens: compare stream to stream.)
    assert streamed(through) == streamed(direct) and "".join(streamed(direct))
    completion = {"model": MODEL, "prompt": "once upon", "temperature": 0, "max_tokens": 12}
    assert (through.completions.create(**completion).choices[0].text
            == direct.completions.create(**completion).choices[0].text)
    assert [m.id for m in through.models.list()] == [m.id for m in direct.models.list()] == [MODEL]


def test_ollama_client_through_openai_upstream(llama_server, proxy):
    want = _openai(llama_server.url).chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0, max_tokens=16)
    client = ollama.Client(host=proxy.url, timeout=30)
    options = {"temperature": 0, "num_predict": 16}
    answer = client.chat(model=MODEL, messages=MESSAGES, options=options)
    assert answer.message.content == want.choices[0].message.content
    assert answer.done and answer.done_reason == want.choices[0].finish_reason
    assert answer.eval_count == want.usage.completion_tokens and answer.prompt_eval_count == want.usage.prompt_tokens
    assert answer.total_duration > 0

    parts = list(client.chat(model=MODEL, messages=MESSAGES, options=options, stream=True))
    direct_stream = _openai(llama_server.url).chat.completions.create(
        model=MODEL, messages=MESSAGES, temperature=0, max_tokens=16, stream=True)
    assert "".join(p.message.content for p in parts) == "".join(
        c.choices[0].delta.content or "" for c in direct_stream if c.choices)
    assert [p.done for p in parts].count(True) == 1 and parts[-1].done
    assert parts[-1].eval_count == want.usage.completion_tokens

    raw = _openai(llama_server.url).completions.create(model=MODEL, prompt="once upon", temperature=0, max_tokens=12)
    generated = client.generate(model=MODEL, prompt="once upon", raw=True, options={"temperature": 0, "num_predict": 12})
    assert generated.response == raw.choices[0].text
    assert [m.model for m in client.list().models] == [MODEL]


def test_whole_ollama_answers_have_a_nonzero_eval_duration(proxy):
    """Unstreamed, the answer arrives at once: there was no first-token time, eval_duration was 0, and
    `ollama run --verbose` divides eval_count by it. The whole request's time is the generation's."""
    client = ollama.Client(host=proxy.url, timeout=30)
    options = {"temperature": 0, "num_predict": 8}
    for answer in (client.chat(model=MODEL, messages=MESSAGES, options=options),
                   client.generate(model=MODEL, prompt="once upon", options=options)):
        assert answer.eval_count > 0 and 0 < answer.eval_duration <= answer.total_duration, answer


def test_streamed_prompt_eval_count_is_counted_or_left_out_never_zero(llama_server, proxy):
    """llama-cpp-python's streams carry no usage (it ignores stream_options.include_usage): prompt_eval_count
    was 0. A raw prompt is counted by its own tokenizer (/extras/tokenize), exactly as its completion counts it;
    a chat prompt (its chat template, which it does not show) cannot be counted exactly: left out, not 0."""
    client = ollama.Client(host=proxy.url, timeout=30)
    options = {"temperature": 0, "num_predict": 4}
    direct = _openai(llama_server.url).completions.create(model=MODEL, prompt="once upon", temperature=0, max_tokens=4)
    parts = list(client.generate(model=MODEL, prompt="once upon", raw=True, options=options, stream=True))
    assert parts[-1].done and parts[-1].prompt_eval_count == direct.usage.prompt_tokens > 0
    parts = list(client.chat(model=MODEL, messages=MESSAGES, options=options, stream=True))
    assert parts[-1].done and parts[-1].eval_count > 0 and parts[-1].prompt_eval_count is None
    raw = httpx.post(f"{proxy.url}/api/chat", json={"model": MODEL, "messages": MESSAGES, "options": options},
                     timeout=30).text.splitlines()
    assert "prompt_eval_count" not in json.loads(raw[-1]) and json.loads(raw[-1])["done"]


SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


def test_ollama_format_schema_through_llama_cpp_python(proxy):
    """llama-cpp-python's server refuses OpenAI's response_format json_schema (its 500, a validation error)
    and takes a schema as json_object + schema: the refused request goes again in that form, later ones at once.
    The ollama client gets JSON that follows the schema, whole and streamed, from chat and generate; an OpenAI
    client's json_schema is sent again the same way."""
    client = ollama.Client(host=proxy.url, timeout=60)
    options = {"temperature": 0, "num_predict": 64}
    answers = [client.chat(model=MODEL, messages=MESSAGES, format=SCHEMA, options=options).message.content,
               "".join(p.message.content for p in client.chat(model=MODEL, messages=MESSAGES, format=SCHEMA,
                                                                options=options, stream=True)),
               client.generate(model=MODEL, prompt="once upon", format=SCHEMA, options=options).response]
    response_format = {"type": "json_schema", "json_schema": {"name": "ok", "schema": SCHEMA}}
    answers.append(_openai(proxy.url).chat.completions.create(  # the same for the openai SDK's own json_schema
        model=MODEL, messages=MESSAGES, temperature=0, max_tokens=64, response_format=response_format
    ).choices[0].message.content)
    for text in answers:
        jsonschema.validate(json.loads(text), SCHEMA)


@pytest.mark.parametrize("stream", [False, True])
def test_responses_max_output_tokens_holds_through_a_chat_only_upstream(llama_server, proxy, stream):
    """/v1/responses becomes a chat request for a server without a Responses API: its max_output_tokens went as
    max_completion_tokens only, which llama-cpp-python's server ignores, so the answer ran on (450 tokens for 16)."""
    client = _openai(proxy.url)
    params = {"model": MODEL, "input": "the cat sat on", "max_output_tokens": 5, "temperature": 0}
    if stream:
        events = list(client.responses.create(stream=True, **params))
        response = events[-1].response
    else:
        response = client.responses.create(**params)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    if response.usage is not None:  # (llama-cpp-python's streams carry no usage)
        assert response.usage.output_tokens == 5


def test_ollama_pull_of_the_upstreams_model_is_present(llama_server, proxy):
    """`ollama pull` of a model the OpenAI-compatible server lists answers as for an up-to-date model (it was a
    501, which stopped clients that pull before they chat); another name gets Ollama's answer for a pull it
    cannot do: an error line in a 200 stream, or a 500."""
    client = ollama.Client(host=proxy.url, timeout=30)
    assert [p.status for p in client.pull(MODEL, stream=True)][-1] == "success"
    assert client.pull(f"{MODEL}:latest").status == "success"
    with pytest.raises(ollama.ResponseError, match="does not pull models"):
        list(client.pull("no-such-model", stream=True))
    with pytest.raises(ollama.ResponseError) as err:
        client.pull("no-such-model")
    assert err.value.status_code == 500 and "pull model manifest" in err.value.error


FUNCTIONS = [{"name": "get_weather", "description": "Weather of a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}},
                             "required": ["city"]}}]


def test_legacy_functions_go_upstream_as_tools_and_come_back_as_function_call(llama_server, proxy):
    """The deprecated `functions` / `function_call` (which llama.cpp's server ignores) go upstream as tools and
    tool_choice; the upstream's tool call comes back as OpenAI answers such a request: `message.function_call`
    (no tool_calls), `delta.function_call` in a stream, finish_reason "function_call". A history in the old
    form (an assistant's function_call, a `function` message) goes as tool calls and results."""
    client = _openai(proxy.url)
    params = {"model": MODEL, "messages": MESSAGES, "temperature": 0, "max_tokens": 48, "functions": FUNCTIONS,
              "function_call": {"name": "get_weather"}}
    r = client.chat.completions.create(**params)
    choice = r.choices[0]
    assert choice.message.function_call is not None and choice.message.tool_calls is None, choice
    assert choice.message.function_call.name == "get_weather" and choice.finish_reason == "function_call"
    assert isinstance(json.loads(choice.message.function_call.arguments)["city"], str)
    direct = _openai(llama_server.url).chat.completions.create(
        model=MODEL, messages=MESSAGES, temperature=0, max_tokens=48,
        tools=[{"type": "function", "function": FUNCTIONS[0]}],
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert json.loads(choice.message.function_call.arguments) == json.loads(
        direct.choices[0].message.tool_calls[0].function.arguments, strict=False)  # (the proxy re-serializes them)

    chunks = list(client.chat.completions.create(stream=True, **params))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert all(d.tool_calls is None for d in deltas)
    name = "".join(d.function_call.name or "" for d in deltas if d.function_call)
    arguments = "".join(d.function_call.arguments or "" for d in deltas if d.function_call)
    assert name == "get_weather" and json.loads(arguments) == json.loads(choice.message.function_call.arguments)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "function_call"

    history = MESSAGES + [{"role": "assistant", "content": None, "function_call": {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}}, {"role": "function", "name": "get_weather",
                                                                  "content": '{"temp_c": 21}'}]
    r = client.chat.completions.create(model=MODEL, messages=history, temperature=0, max_tokens=8,
                                       functions=FUNCTIONS, function_call="none")
    assert r.choices[0].message.function_call is None and r.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.BadRequestError) as err:  # both forms at once: the client's 400, not the upstream's
        client.chat.completions.create(model=MODEL, messages=MESSAGES, functions=FUNCTIONS,
                                       tools=[{"type": "function", "function": FUNCTIONS[0]}])
    assert err.value.body["param"] == "functions"


def test_an_agent_loop_with_the_sdks_own_assistant_message(llama_server, proxy):
    """The openai SDK's tool-call answer sent back as history has `content: null`, which llama-cpp-python's
    server refuses (500, a validation error); relayed with content "" (the same turn to every server)."""
    client = _openai(proxy.url)
    tools = [{"type": "function", "function": FUNCTIONS[0]}]
    first = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0, max_tokens=48, tools=tools,
                                           tool_choice={"type": "function", "function": {"name": "get_weather"}})
    call = first.choices[0].message
    assert call.content is None and call.tool_calls and call.function_call is None  # not llama-cpp-python's copy
    result = {"role": "tool", "tool_call_id": call.tool_calls[0].id, "content": '{"temp_c": 21}'}
    for history, stream in ((MESSAGES + [call, result], False),  # the message object itself, as the SDK's docs do
                            (MESSAGES + [call.model_dump(exclude_none=False), result], True)):  # every null in it
        answer = client.chat.completions.create(model=MODEL, messages=history, temperature=0, max_tokens=4,
                                                tools=tools, tool_choice="none", stream=stream)
        chunks = list(answer) if stream else [answer]
        assert chunks and all(c.choices is not None for c in chunks)
    deltas = [c.choices[0].delta for c in client.chat.completions.create(
        model=MODEL, messages=MESSAGES, temperature=0, max_tokens=48, tools=tools, stream=True,
        tool_choice={"type": "function", "function": {"name": "get_weather"}}) if c.choices]
    assert any(d.tool_calls for d in deltas) and not any(d.function_call for d in deltas)


def test_upstream_restart(llama_server, proxy):
    client = ollama.Client(host=proxy.url, timeout=30)
    # the model answered once: the proxy knows it is the upstream's (run alone, this test had no listing of it,
    # and the first request after the stop was a 404 for an unknown model, not the 502)
    assert client.chat(model=MODEL, messages=MESSAGES, options={"num_predict": 1}).done
    llama_server.stop()
    try:
        def refused() -> None:
            with pytest.raises(ollama.ResponseError) as err:
                client.chat(model=MODEL, messages=MESSAGES)
            assert err.value.status_code == 502 and llama_server.url in err.value.error
            with pytest.raises(openai.InternalServerError):
                _openai(proxy.url).chat.completions.create(model=MODEL, messages=MESSAGES)

        assert_fast(refused, 2)  # no retry or timeout waited out: one try of three within 2 s
    finally:
        llama_server.start()
    answer = client.chat(model=MODEL, messages=MESSAGES, options={"temperature": 0, "num_predict": 4})
    assert answer.done and answer.eval_count == 4
