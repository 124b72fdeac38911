"""The deprecated function calling (`functions`, `function_call`, role "function"), run as tools: the
rewriting of a request (velollm.wire.legacy_functions), then a real `velollm serve` answering the openai SDK
with `message.function_call` / `delta.function_call` as OpenAI does, and a history in the old form."""

from __future__ import annotations

import json

import openai
import pytest

from tests.api.test_tools_schemas import validate
from velollm.wire.legacy_functions import as_tools, function_call_delta
from velollm.api.protocol_openai import parse_chat_request
from velollm.errors import InvalidRequest

PARAMS = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}
FUNCTIONS = [{"name": "get_weather", "description": "Weather of a city", "parameters": PARAMS}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
HISTORY = ASK + [{"role": "assistant", "content": None,
                  "function_call": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                 {"role": "function", "name": "get_weather", "content": '{"temp_c": 21}'}]


def test_functions_become_tools_and_the_body_is_left_as_sent():
    body = {"model": "m", "messages": ASK, "functions": FUNCTIONS, "function_call": {"name": "get_weather"}}
    sent = json.loads(json.dumps(body))
    out, legacy = as_tools(body)
    assert legacy and body == sent
    assert out["tools"] == [{"type": "function", "function": FUNCTIONS[0]}]
    assert out["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert out["parallel_tool_calls"] is False and "functions" not in out and "function_call" not in out
    req = parse_chat_request(body)
    assert req.legacy_functions and [t["function"]["name"] for t in req.tool_config.tools] == ["get_weather"]
    assert not parse_chat_request({"model": "m", "messages": ASK}).legacy_functions
    assert as_tools({"model": "m", "messages": ASK, "function_call": "auto"})[0]["tool_choice"] == "auto"


def test_old_history_becomes_tool_calls_and_results():
    out, legacy = as_tools({"model": "m", "messages": HISTORY})
    assert not legacy  # a history alone: the answer may still use tools, as the request says
    assistant, result = out["messages"][1], out["messages"][2]
    assert "function_call" not in assistant
    assert assistant["tool_calls"] == [{"id": "call_fn_1", "type": "function", "function": HISTORY[1]["function_call"]}]
    assert result == {"role": "tool", "name": "get_weather", "content": '{"temp_c": 21}', "tool_call_id": "call_fn_1"}
    parse_chat_request({"model": "m", "messages": HISTORY})  # the rest of the validation accepts it


@pytest.mark.parametrize(("body", "param"), [
    ({"functions": FUNCTIONS, "tools": [{"type": "function", "function": FUNCTIONS[0]}]}, "functions"),
    ({"functions": FUNCTIONS, "function_call": "auto", "tool_choice": "auto"}, "function_call"),
    ({"functions": {"name": "f"}}, "functions"),
    ({"functions": ["f"]}, "functions[0]"),
    ({"functions": FUNCTIONS, "function_call": "required"}, "function_call"),
    ({"functions": FUNCTIONS, "function_call": {"name": ""}}, "function_call"),
    ({"function_call": {"name": "get_weather"}}, "function_call"),
    ({"functions": FUNCTIONS, "function_call": {"name": "nope"}}, "tool_choice"),
    ({"messages": [ASK[0], {"role": "assistant", "function_call": "get_weather"}]}, "messages[1].function_call"),
])
def test_contradictions_and_wrong_types_are_400s(body, param):
    with pytest.raises(InvalidRequest) as err:
        parse_chat_request({"model": "m", "messages": ASK, **body})
    assert err.value.param == param


def test_stream_deltas_become_function_call_pieces():
    first = [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]
    assert function_call_delta(first) == {"name": "get_weather", "arguments": ""}
    assert function_call_delta([{"index": 0, "function": {"arguments": '{"ci'}}]) == {"arguments": '{"ci'}
    assert function_call_delta([{"index": 1, "function": {"arguments": "x"}}]) is None


def _client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_named_function_call_through_the_sdk(live_server):
    client = _client(live_server)
    kw = dict(model="demo", messages=ASK, functions=FUNCTIONS, function_call={"name": "get_weather"}, max_tokens=64)
    for seed in range(3):
        message = client.chat.completions.create(**kw, seed=seed).choices[0].message
        assert message.tool_calls is None and message.function_call.name == "get_weather"
        validate(PARAMS, message.function_call.arguments)
    name, arguments, finish = None, "", None
    for chunk in client.chat.completions.create(**kw, seed=0, stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        assert delta.tool_calls is None
        if delta.function_call is not None:
            name = delta.function_call.name or name
            arguments += delta.function_call.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    whole = client.chat.completions.create(**kw, seed=0).choices[0]
    assert name == "get_weather" and json.loads(arguments) == json.loads(whole.message.function_call.arguments)
    assert finish == whole.finish_reason


def test_auto_function_call_answers_text_or_one_call(live_server):
    client = _client(live_server)
    seen = set()
    for seed in range(6):
        choice = client.chat.completions.create(model="demo", messages=ASK, functions=FUNCTIONS, function_call="auto",
                                                max_tokens=48, seed=seed, temperature=1.0).choices[0]
        assert choice.message.tool_calls is None
        if choice.message.function_call is not None:
            assert choice.finish_reason == "function_call"
            validate(PARAMS, choice.message.function_call.arguments)
        seen.add(choice.finish_reason)
    assert seen <= {"function_call", "stop", "length"}


def test_old_history_is_rendered_as_tool_results(live_server):
    client = _client(live_server)
    old = client.chat.completions.create(model="demo", messages=HISTORY, functions=FUNCTIONS, max_tokens=4,
                                         temperature=0, extra_body={"ignore_eos": True})
    new_form, _ = as_tools({"messages": HISTORY})
    new = client.chat.completions.create(model="demo", messages=new_form["messages"],
                                         tools=[{"type": "function", "function": FUNCTIONS[0]}], parallel_tool_calls=False,
                                         max_tokens=4, temperature=0, extra_body={"ignore_eos": True})
    assert old.usage.prompt_tokens == new.usage.prompt_tokens > 40
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="demo", messages=ASK, functions=FUNCTIONS,
                                       tools=[{"type": "function", "function": FUNCTIONS[0]}], max_tokens=2)
    assert err.value.body["param"] == "functions"
