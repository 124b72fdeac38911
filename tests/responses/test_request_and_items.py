"""Responses requests: validation (OpenAI's param names), items <-> chat messages, the chat body."""

from __future__ import annotations

import pytest

from velollm.errors import InvalidRequest
from velollm.responses import chat_body, conversation, items_to_messages, output_items, parse_responses_request

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def test_text_input_and_fields_become_a_chat_body():
    req = parse_responses_request({
        "model": "m", "input": "Hi", "instructions": "Be brief.", "max_output_tokens": 50, "temperature": 0.2,
        "top_p": 0.9, "reasoning": {"effort": "low"}, "seed": 7, "metadata": {"k": "v"}})
    body = chat_body(req, conversation(req))
    assert body == {"model": "m", "seed": 7, "messages": [{"role": "system", "content": "Be brief."},
                                                          {"role": "user", "content": "Hi"}],
                    "max_completion_tokens": 50, "temperature": 0.2, "top_p": 0.9, "reasoning_effort": "low"}
    assert req.metadata == {"k": "v"} and req.store and not req.stream


def test_tools_tool_choice_and_text_format():
    req = parse_responses_request({
        "model": "m", "input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": False, "stream": True,
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True}}})
    body = chat_body(req, conversation(req))
    assert body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather of a city", "parameters": WEATHER["parameters"]}}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True}}


@pytest.mark.parametrize("body,param", [
    ({"input": "x"}, "model"),
    ({"model": "m", "input": 3}, "input"),
    ({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"model": "m", "input": "x", "tool_choice": "required"}, "tool_choice"),
    ({"model": "m", "input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "w"}}}, "text.format.schema"),
    ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": "m", "input": "x", "temperature": True}, "temperature"),
    ({"model": "m", "input": "x", "temperature": 10**400}, "temperature"),  # float() of it was a 500
    ({"model": "m", "input": "x", "top_p": -(10**400)}, "top_p"),
    ({"model": "m", "input": "x", "background": True, "store": False}, "background"),
    ({"model": "m", "input": "x", "background": "yes"}, "background"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "input[0].content[0]"),
    ({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"model": "m", "input": "x", "include": ["message.output_text.logprob"]}, "include[0]"),
    ({"model": "m", "input": "x", "include": ["reasoning.encrypted_content", "logprobs"]}, "include[1]"),
])
def test_bad_requests_name_the_param(body, param):
    with pytest.raises(InvalidRequest) as e:
        req = parse_responses_request(body)
        items_to_messages(req.input)
    assert e.value.param == param


def test_items_round_trip_a_tool_turn():
    items = [
        {"role": "developer", "content": "Use tools."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in "},
                                                       {"type": "input_text", "text": "Paris?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "Need a tool."}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": '{"city": "Lyon"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "20C"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "18C and 20C."}]},
    ]
    assert items_to_messages(items) == [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "reasoning_content": "Need a tool.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "20C"},
        {"role": "assistant", "content": "18C and 20C."},
    ]


def test_output_items_of_a_chat_message_read_back_as_the_same_message():
    message = {"role": "assistant", "content": "Checking.", "reasoning_content": "Hmm.",
               "tool_calls": [{"id": "call_9", "type": "function",
                               "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]}
    items = output_items(message)
    assert [i["type"] for i in items] == ["reasoning", "message", "function_call"]
    assert items[2]["call_id"] == "call_9" and items[2]["id"].startswith("fc_")
    assert items_to_messages(items) == [message]


def test_previous_conversation_goes_first_and_instructions_are_not_kept():
    req = parse_responses_request({"model": "m", "instructions": "New rules.", "previous_response_id": "resp_1",
                                   "input": [{"type": "function_call_output", "call_id": "c", "output": "ok"}]})
    history = [{"role": "user", "content": "go"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]
    turn = conversation(req, history)
    assert turn == [*history, {"role": "tool", "tool_call_id": "c", "content": "ok"}]
    assert chat_body(req, turn)["messages"][0] == {"role": "system", "content": "New rules."}


@pytest.mark.parametrize("items,history", [
    ([{"type": "function_call_output", "call_id": "call_x", "output": "ok"}], []),
    ([{"type": "function_call_output", "call_id": "call_x", "output": "ok"},  # a result before its call
      {"type": "function_call", "call_id": "call_x", "name": "f", "arguments": "{}"}], []),
    ([{"type": "function_call_output", "call_id": "call_x", "output": "ok"}],
     [{"role": "assistant", "content": None, "tool_calls": [
         {"id": "call_other", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]),
])
def test_a_function_call_output_without_its_call_is_openais_400(items, history):
    req = parse_responses_request({"model": "m", "input": items})
    with pytest.raises(InvalidRequest) as e:
        conversation(req, history)
    assert str(e.value) == "No tool call found for function call output with call_id call_x."
    assert e.value.param == "input"


def test_encrypted_reasoning_reads_back_as_the_thinking():
    """include=["reasoning.encrypted_content"]: reasoning items carry the thinking in a form a stateless client
    (store=false) sends back without the text; it reads back as the same assistant turn."""
    from velollm.responses.items import encrypt_reasoning
    from velollm.responses.response_object import ResponseShell

    req = parse_responses_request({"model": "m", "input": "hi", "include": ["reasoning.encrypted_content"]})
    message = {"role": "assistant", "content": "Sunny.", "reasoning_content": "They ask about the weather."}
    output = ResponseShell(req).build("completed", output_items(message))["output"]
    [reasoning] = [o for o in output if o["type"] == "reasoning"]
    replay = [{"type": "reasoning", "id": reasoning["id"], "summary": [],
               "encrypted_content": reasoning["encrypted_content"]}, *(o for o in output if o["type"] == "message")]
    assert items_to_messages(replay) == [message]
    plain = ResponseShell(parse_responses_request({"model": "m", "input": "hi"})).build("completed", output_items(message))
    assert all("encrypted_content" not in o for o in plain["output"])
    assert encrypt_reasoning(reasoning) == reasoning
    with pytest.raises(InvalidRequest, match="encrypted content could not be read") as err:
        items_to_messages([{"type": "reasoning", "summary": [], "encrypted_content": "gAAAAABo-openai"}])
    assert err.value.param == "input[0].encrypted_content"
