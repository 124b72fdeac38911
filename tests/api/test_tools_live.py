"""Tool calling on a real `velollm serve` (demo: Llama 3 style template with tools, random weights).

Conversations with calls and results render through the model's own template and parse back;
tool_choice "auto" lets the model answer text or a call; parallel_tool_calls=false gives at most
one call; n choices each get their own calls; the outcome counter moves.
"""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from tests.api.conftest import ServerHandle, start_live, stop_live
from tests.api.test_tools_schemas import gather_limited, validate
from velollm.api.chat_messages import normalize_messages
from velollm.engine.loader.demo import DEMO_NAME
from velollm.engine.text.tokenizer import Tokenizer
from velollm.tools.tool_session import ToolSession

MAX_TOKENS = 256
PARAMS = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                           "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": PARAMS}},
         {"type": "function", "function": {"name": "get_time", "parameters": {
             "type": "object", "properties": {"zone": {"type": "string", "format": "hostname"}}}}}]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
HEADER = "<|start_header_id|>assistant<|end_header_id|>\n\n"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tools-live")
    proc, url, _ = start_live(tmp, "--max-model-len", "2048")
    try:
        yield ServerHandle("live", url), Tokenizer.from_folder(tmp / "cache" / DEMO_NAME)
    finally:
        stop_live(proc)


def _client(server: ServerHandle) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)


class _Streamed:
    """A streamed choice put back together: its text, its calls as (name, arguments), its finish_reason."""

    def __init__(self) -> None:
        self.content, self.finish = "", None
        self._calls: dict[int, tuple[str, str]] = {}

    def add(self, chunk) -> None:
        delta = chunk.choices[0].delta
        self.content += delta.content or ""
        for d in delta.tool_calls or []:
            name, args = self._calls.get(d.index, ("", ""))
            self._calls[d.index] = (name + (d.function.name or ""), args + (d.function.arguments or ""))
        self.finish = chunk.choices[0].finish_reason or self.finish

    @property
    def calls(self) -> list[tuple[str, str]]:
        return list(self._calls.values())


def _check_calls(calls) -> None:
    for c in calls:
        validate(SCHEMAS[c.function.name], c.function.arguments)


@pytest.mark.parametrize("parallel", [True, False])
def test_parallel_tool_calls(live, parallel):
    server, _ = live

    async def run():
        client = _client(server)
        whole = [client.chat.completions.create(model="demo", messages=MESSAGES, tools=TOOLS, tool_choice="required",
                                                parallel_tool_calls=parallel, max_tokens=MAX_TOKENS, seed=i)
                 for i in range(16)]
        return await gather_limited(whole)

    counts = []
    for r in asyncio.run(run()):
        calls = r.choices[0].message.tool_calls
        assert r.choices[0].finish_reason == "tool_calls" and calls
        _check_calls(calls)
        counts.append(len(calls))
    if parallel:
        assert max(counts) > 1, "random answers take the parallel branch of the grammar somewhere"
    else:
        assert counts == [1] * len(counts)


def test_parallel_false_streaming(live):
    server, _ = live

    async def one(client, seed):
        indices = set()
        finish = None
        async for chunk in await client.chat.completions.create(
                model="demo", messages=MESSAGES, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
                max_tokens=MAX_TOKENS, seed=seed, stream=True):
            for d in chunk.choices[0].delta.tool_calls or []:
                indices.add(d.index)
            finish = chunk.choices[0].finish_reason or finish
        return indices, finish

    async def run():
        client = _client(server)
        return await gather_limited([one(client, i) for i in range(8)])

    assert all(indices == {0} and finish == "tool_calls" for indices, finish in asyncio.run(run()))


def test_n_choices_each_get_calls(live):
    server, _ = live
    r = asyncio.run(_client(server).chat.completions.create(
        model="demo", messages=MESSAGES, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}},
        n=3, max_tokens=MAX_TOKENS, seed=5))
    assert [c.index for c in r.choices] == [0, 1, 2]
    for choice in r.choices:
        assert choice.finish_reason == "tool_calls" and [c.function.name for c in choice.message.tool_calls] == [
            "get_time"]
        _check_calls(choice.message.tool_calls)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_auto_answers_text_or_a_valid_call(live, stream):
    server, _ = live

    async def one(client, seed):
        kw = dict(model="demo", messages=MESSAGES, tools=TOOLS, max_tokens=48, seed=seed,
                  tool_choice="auto" if seed % 2 else openai.NOT_GIVEN)
        if not stream:
            r = await client.chat.completions.create(**kw)
            calls = [(c.function.name, c.function.arguments) for c in r.choices[0].message.tool_calls or []]
            return r.choices[0].message.content, calls, r.choices[0].finish_reason
        streamed = _Streamed()
        async for chunk in await client.chat.completions.create(**kw, stream=True):
            streamed.add(chunk)
        return streamed.content, streamed.calls, streamed.finish

    async def run():
        client = _client(server)
        return await gather_limited([one(client, i) for i in range(12)])

    for content, calls, finish in asyncio.run(run()):
        if calls:
            assert finish == "tool_calls"
            for name, arguments in calls:
                validate(SCHEMAS[name], arguments)
        else:
            assert content and finish in ("stop", "length")


ANSWER = {"type": "object", "properties": {"sunny": {"type": "boolean"}}, "required": ["sunny"],
          "additionalProperties": False}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_auto_with_a_response_format_answers_calls_or_that_format(live, stream):
    """tool_choice "auto" beside response_format (or Ollama's `format` beside tools) ignored the format: the tool
    grammar lets text run free until a call marker, so a text answer was any text. Now each answer is valid
    calls or JSON of the format, whole and streamed, and through the ollama client."""
    import ollama

    server, _ = live
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
    rf = {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER}}
    for seed in range(6):
        kw = {"model": "demo", "messages": MESSAGES, "tools": TOOLS, "max_tokens": 96, "seed": seed,
              "response_format": rf}
        if stream:
            streamed = _Streamed()
            for chunk in client.chat.completions.create(**kw, stream=True):
                streamed.add(chunk)
            content, calls, finish = streamed.content, streamed.calls, streamed.finish
        else:
            choice = client.chat.completions.create(**kw).choices[0]
            content, finish = choice.message.content, choice.finish_reason
            calls = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
        if calls:
            assert finish == "tool_calls" and not content, (content, calls)
            for name, arguments in calls:
                validate(SCHEMAS[name], arguments)
        else:
            assert finish == "stop", content
            validate(ANSWER, content)
    if not stream:
        native = ollama.Client(host=server.url, timeout=120)
        for seed in range(3):
            message = native.chat(model="demo", messages=MESSAGES, tools=TOOLS, format=ANSWER,
                                  options={"num_predict": 96, "seed": seed}).message
            if message.tool_calls:
                for call in message.tool_calls:
                    validate(SCHEMAS[call.function.name], json.dumps(call.function.arguments))
            else:
                validate(ANSWER, message.content)


def _expected_prompt(tok: Tokenizer, history: list[dict], tools: list[dict] = TOOLS) -> tuple[str, list[int]]:
    session = ToolSession(tok, tools, "required", model_type="llama")
    messages = normalize_messages(history)
    return session.render_prompt(messages, add_generation_prompt=True), session.prompt_token_ids(
        messages, add_generation_prompt=True)


def test_history_with_calls_and_results_renders_and_parses_back(live):
    server, tok = live
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)
    first = client.chat.completions.create(model="demo", messages=MESSAGES, tools=TOOLS, tool_choice="required",
                                           parallel_tool_calls=False, max_tokens=MAX_TOKENS, seed=11)
    [call] = first.choices[0].message.tool_calls
    history = [*MESSAGES,
               {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
               {"role": "tool", "tool_call_id": call.id, "content": "18 C, light rain"},
               {"role": "user", "content": "And tomorrow?"}]
    second = client.chat.completions.create(model="demo", messages=history, tools=TOOLS, tool_choice="required",
                                            max_tokens=MAX_TOKENS, seed=12)
    assert second.choices[0].finish_reason == "tool_calls"
    _check_calls(second.choices[0].message.tool_calls)

    text, ids = _expected_prompt(tok, history)
    assert second.usage.prompt_tokens == len(ids)  # the server rendered exactly this prompt
    assert "<|start_header_id|>ipython<|end_header_id|>\n\n18 C, light rain<|eot_id|>" in text
    turn = text.split(HEADER)[1].split("<|eot_id|>")[0]
    session = ToolSession(tok, TOOLS, "auto", model_type="llama")
    [parsed] = session.parse(turn).calls  # the call in the history reads back as the same call
    assert parsed.name == call.function.name
    assert json.loads(parsed.arguments) == json.loads(call.function.arguments)


def test_ollama_history_renders_like_openai(live):
    import ollama

    server, tok = live
    # The ollama client keeps only type, description and enum of each property: tools it sends whole.
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "description": "city"},
                                         "unit": {"type": "string", "description": "unit", "enum": ["c", "f"]}},
        "required": ["city"]}}}]
    args = {"city": "Oslo", "unit": "c"}
    history = [*MESSAGES, {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": args}}]},
               {"role": "tool", "tool_name": "get_weather", "content": "-3 C"}, {"role": "user", "content": "Thanks"}]
    r = ollama.Client(host=server.url, timeout=120).chat(model="demo", messages=history, tools=tools,
                                                         options={"num_predict": 8})
    openai_history = [*MESSAGES, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps(args)}}]},
                      {"role": "tool", "tool_call_id": "call_1", "content": "-3 C"},
                      {"role": "user", "content": "Thanks"}]
    text, ids = _expected_prompt(tok, openai_history, tools)
    assert r.prompt_eval_count == len(ids)
    assert '{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "c"}}' in text


def test_outcomes_are_counted(live):
    server, _ = live
    before = server.metric("velollm_tool_calls_total", model="demo", outcome="valid")
    r = asyncio.run(_client(server).chat.completions.create(
        model="demo", messages=MESSAGES, tools=TOOLS, tool_choice="required", max_tokens=MAX_TOKENS, seed=3))
    after = server.metric("velollm_tool_calls_total", model="demo", outcome="valid")
    assert after - before == len(r.choices[0].message.tool_calls) >= 1
