"""tool_choice "required" or a named function through a VeloLLM proxy to an Ollama upstream (here a native
VeloLLM on the demo model, `--proxy-only` in front, told `--upstream-kind ollama` so that it converts as for
an Ollama: found by the kind probe, a VeloLLM gets /v1 passed through), with the openai SDK and LangChain:
Ollama has no tool_choice, so the answer was the model's free text, without a call."""

from __future__ import annotations

import json
from collections.abc import Iterator

import jsonschema
import openai
import pytest

from tests.serve_process import start_serve, stop_serve
from velollm.proxy.forced_tool_call import as_call, call_format

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
             "type": "object", "properties": {"city": {"type": "string", "maxLength": 10}}, "required": ["city"]}}},
         {"type": "function", "function": {"name": "get_time", "parameters": {
             "type": "object", "properties": {"tz": {"type": "string", "enum": ["UTC", "CET"]}}, "required": ["tz"]}}}]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory) -> Iterator[str]:
    native, native_url, _, _ = start_serve(tmp_path_factory.mktemp("native"), "--no-upstream",
                                           "--max-model-len", "1024", "--kv-cache-memory", "16MiB")
    front, url, _, _ = start_serve(tmp_path_factory.mktemp("front"), "--proxy-only", "--upstream", native_url,
                                   "--upstream-kind", "ollama")
    yield url
    stop_serve(front)
    stop_serve(native)


@pytest.mark.parametrize("choice, names", [("required", {"get_weather", "get_time"}),
                                           ({"type": "function", "function": {"name": "get_time"}}, {"get_time"})])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_forced_choice_answers_a_call(proxy, choice, names, stream):
    client = openai.OpenAI(base_url=f"{proxy}/v1", api_key="x", max_retries=0, timeout=120)
    for seed in range(3):
        kw = {"model": "demo", "messages": [{"role": "user", "content": "weather?"}], "tools": TOOLS,
              "tool_choice": choice, "max_tokens": 96, "seed": seed}
        if stream:
            chunks = [c for c in client.chat.completions.create(**kw, stream=True) if c.choices]
            calls = [(t.function.name, t.function.arguments) for c in chunks for t in c.choices[0].delta.tool_calls or []]
            finish = chunks[-1].choices[0].finish_reason
        else:
            choice_out = client.chat.completions.create(**kw).choices[0]
            calls = [(t.function.name, t.function.arguments) for t in choice_out.message.tool_calls or []]
            finish = choice_out.finish_reason
        assert finish == "tool_calls" and calls, calls
        for name, arguments in calls:
            assert name in names
            jsonschema.validate(json.loads(arguments), SCHEMAS[name])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_responses_forced_choice_answers_a_call(proxy, stream):
    """A Responses create runs on the Ollama upstream's chat, whose forced call comes whole, its events held in one
    body: the streamed create read that body as one JSON object and ended `response.failed` ('internal error:
    Expecting value'), where the same create unstreamed answered the call."""
    client = openai.OpenAI(base_url=f"{proxy}/v1", api_key="x", max_retries=0, timeout=120)
    tools = [{"type": "function", "name": t["function"]["name"], "parameters": t["function"]["parameters"],
              "strict": False} for t in TOOLS]
    kw = {"model": "demo", "input": "weather?", "tools": tools, "tool_choice": "required", "max_output_tokens": 96}
    if stream:
        with client.responses.stream(**kw) as events:
            types = [e.type for e in events]
            response = events.get_final_response()
        assert "response.function_call_arguments.done" in types
    else:
        response = client.responses.create(**kw)
    assert response.status == "completed"
    calls = [item for item in response.output if item.type == "function_call"]
    assert calls and all(call.name in SCHEMAS for call in calls)
    for call in calls:
        jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_legacy_forced_function_call_answers_function_call(proxy, stream):
    """The deprecated `functions` with a named `function_call` (older LangChain agents, AutoGen) is a forced call
    here too: streamed, its events came held in one body, which the function_call rewrite left alone (it read the
    body as one JSON object), so the client got `tool_calls` and finish_reason `tool_calls`, asked for neither."""
    client = openai.OpenAI(base_url=f"{proxy}/v1", api_key="x", max_retries=0, timeout=120)
    kw = {"model": "demo", "messages": [{"role": "user", "content": "weather?"}], "max_tokens": 96, "seed": 1,
          "functions": [t["function"] for t in TOOLS], "function_call": {"name": "get_weather"}}
    if stream:
        chunks = [c for c in client.chat.completions.create(**kw, stream=True) if c.choices]
        assert not any(c.choices[0].delta.tool_calls for c in chunks)
        calls = [c.choices[0].delta.function_call for c in chunks if c.choices[0].delta.function_call]
        name, arguments = calls[0].name, "".join(call.arguments or "" for call in calls)
        finish = chunks[-1].choices[0].finish_reason
    else:
        message = client.chat.completions.create(**kw).choices[0]
        assert not message.message.tool_calls
        name, arguments, finish = message.message.function_call.name, message.message.function_call.arguments, \
            message.finish_reason
    assert (name, finish) == ("get_weather", "function_call")
    jsonschema.validate(json.loads(arguments), SCHEMAS["get_weather"])


def test_langchain_function_calling_structured_output(proxy):
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel

    class Weather(BaseModel):
        city: str
        temp: int

    llm = ChatOpenAI(model="demo", base_url=f"{proxy}/v1", api_key="x", max_tokens=96, max_retries=0)
    answer = llm.with_structured_output(Weather, method="function_calling").invoke("weather in Paris?")
    assert isinstance(answer, Weather)


def test_the_constrained_json_becomes_the_call():
    """What an upstream that parses no calls out sends back: the JSON of the call format, as content."""
    fmt = call_format(TOOLS[:1])
    call = {"name": "get_weather", "arguments": {"city": "Paris"}}
    jsonschema.validate(call, fmt)
    answer = as_call({"message": {"role": "assistant", "content": json.dumps(call)}, "done": True})
    assert answer["message"] == {"role": "assistant", "content": "",
                                 "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
    cut = {"message": {"role": "assistant", "content": '{"name": "get_wea'}, "done": True}
    assert as_call(cut) is cut  # a cut answer stays text, never dropped
    assert {v["properties"]["name"]["enum"][0] for v in call_format(TOOLS)["anyOf"]} == set(SCHEMAS)
