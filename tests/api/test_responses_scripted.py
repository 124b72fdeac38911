"""/v1/responses through the official openai SDK, on the scripted stub (thinking template, scripted answers)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.api.test_reasoning_scripted import THOUGHT, engine, thinking_server  # noqa: F401 (fixtures)
from tests.api.test_tools_scripted import scripted  # noqa: F401 (the scripted server fixture)

TOOL = {"type": "function", "name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CALL = '{"name": "get_weather", "parameters": {"city": "Paris"}}'


@pytest.fixture
def client(thinking_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{thinking_server.url}/v1", api_key="x", max_retries=0, timeout=30)


def _prompt(engine, i: int) -> str:
    return engine.tokenizer.decode(engine.seen_prompts[i])


def test_text_in_reasoning_and_text_out(client, engine):
    engine.script = [THOUGHT + "Hello!"]
    r = client.responses.create(model="demo", input="Hi", instructions="Be brief.", max_output_tokens=64,
                                temperature=0.5, top_p=0.9, reasoning={"effort": "high"}, metadata={"k": "v"})
    assert r.status == "completed" and r.object == "response" and r.output_text == "Hello!"
    reasoning, message = r.output
    assert reasoning.type == "reasoning" and reasoning.content[0].text == "The user says hi."
    assert message.type == "message" and message.role == "assistant"
    assert r.usage.output_tokens == len(THOUGHT + "Hello!")
    assert r.usage.output_tokens_details.reasoning_tokens == len(THOUGHT.rstrip())
    assert r.instructions == "Be brief." and r.max_output_tokens == 64 and r.metadata == {"k": "v"}
    params = engine.seen_params[-1]
    assert (params.max_tokens, params.temperature, params.top_p) == (64, 0.5, 0.9)
    assert _prompt(engine, -1) == "<system>Be brief.\n<user>Hi\n<assistant>"
    assert client.responses.retrieve(r.id).output_text == "Hello!"


def test_stream_events(client, engine):
    engine.script = [THOUGHT + "Hello!"]
    events = list(client.responses.create(model="demo", input="Hi", stream=True))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert "response.reasoning_text.delta" in types and "response.output_text.delta" in types
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Hello!"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert final.output_text == "Hello!" and final.usage.output_tokens_details.reasoning_tokens > 0
    assert client.responses.retrieve(final.id).status == "completed"  # streamed responses are stored too


@pytest.mark.parametrize("stream", [False, True])
def test_cut_by_max_output_tokens_only_the_cut_item_is_incomplete(client, engine, stream):
    """The thinking closed and the answer was cut: the reasoning item is completed, the message item
    incomplete (as are the response, reason max_output_tokens), in the answer, its events and the store."""
    engine.script = [THOUGHT + "Hello, and a long answer after it."]
    kw = {"model": "demo", "input": "Hi", "max_output_tokens": len(THOUGHT) + 5}
    if stream:
        events = list(client.responses.create(**kw, stream=True))
        assert events[-1].type == "response.incomplete"
        done = [e.item for e in events if e.type == "response.output_item.done"]
        assert [(i.type, i.status) for i in done] == [("reasoning", "completed"), ("message", "incomplete")]
        r = events[-1].response
    else:
        r = client.responses.create(**kw)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text == "Hello"
    assert [(o.type, o.status) for o in r.output] == [("reasoning", "completed"), ("message", "incomplete")]
    stored = client.responses.retrieve(r.id)
    assert stored.status == "incomplete" and stored.incomplete_details.reason == "max_output_tokens"
    assert [(o.type, o.status) for o in stored.output] == [("reasoning", "completed"), ("message", "incomplete")]


@pytest.mark.parametrize("stream", [False, True])
def test_cut_while_thinking_the_reasoning_item_is_incomplete(client, engine, stream):
    engine.script = [THOUGHT + "Hello!"]
    kw = {"model": "demo", "input": "Hi", "max_output_tokens": 12}
    if stream:
        events = list(client.responses.create(**kw, stream=True))
        assert [(e.item.type, e.item.status) for e in events if e.type == "response.output_item.done"] == [
            ("reasoning", "incomplete")]
        r = events[-1].response
    else:
        r = client.responses.create(**kw)
    assert r.status == "incomplete" and [(o.type, o.status) for o in r.output] == [("reasoning", "incomplete")]
    assert [o.status for o in client.responses.retrieve(r.id).output] == ["incomplete"]


@pytest.mark.parametrize("huge", [1e30, 10**30, 2**63])
def test_a_huge_max_output_tokens_is_clamped_as_chat_clamps_max_tokens(thinking_server, engine, huge):
    """Chat takes a max_tokens past the context as "as long as fits" (velollm/output_budget.py); the Responses
    request underneath it does the same with max_output_tokens, where it was a 400 for 1e30. The Response echoes
    the budget it ran with, whole, streamed and stored (10**30 was echoed as sent: no int64 client reads it)."""
    engine.script = ["Hello!"] * 4
    chat = httpx.post(f"{thinking_server.url}/v1/chat/completions", timeout=30, json={
        "model": "demo", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": huge})
    assert chat.status_code == 200, chat.text
    r = httpx.post(f"{thinking_server.url}/v1/responses", timeout=30,
                   json={"model": "demo", "input": "Hi", "max_output_tokens": huge})
    assert r.status_code == 200, r.text
    chat_budget, responses_budget = (p.max_tokens for p in engine.seen_params[-2:])
    assert responses_budget == chat_budget < int(huge)
    assert r.json()["status"] == "completed" and r.json()["max_output_tokens"] == responses_budget
    stored = httpx.get(f"{thinking_server.url}/v1/responses/{r.json()['id']}", timeout=30)
    assert stored.status_code == 200 and stored.json()["max_output_tokens"] == responses_budget
    with httpx.stream("POST", f"{thinking_server.url}/v1/responses", timeout=30,
                      json={"model": "demo", "input": "Hi", "max_output_tokens": huge, "stream": True}) as answer:
        events = [json.loads(line[6:]) for line in answer.iter_lines() if line.startswith("data: ")]
    assert [e["response"]["max_output_tokens"] for e in events if "response" in e] == [responses_budget] * 3
    r = httpx.post(f"{thinking_server.url}/v1/responses", timeout=30,
                   json={"model": "demo", "input": "Hi", "max_output_tokens": 7})
    assert r.json()["max_output_tokens"] == engine.seen_params[-1].max_tokens == 7  # one that fits: as sent
    r = httpx.post(f"{thinking_server.url}/v1/responses", timeout=30,
                   json={"model": "demo", "input": "Hi", "max_output_tokens": 1.5})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_output_tokens"


@pytest.mark.parametrize("stream", [False, True])
def test_tool_round_trip_with_previous_response_id(client, engine, stream):
    engine.script = [f"<think>\nNeed the weather.\n</think>\n\n{CALL}", "It is 18C in Paris."]
    if stream:
        events = list(client.responses.create(model="demo", input="Weather in Paris?", tools=[TOOL], stream=True))
        assert any(e.type == "response.function_call_arguments.delta" for e in events)
        first = events[-1].response
    else:
        first = client.responses.create(model="demo", input="Weather in Paris?", tools=[TOOL])
    [call] = [o for o in first.output if o.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    second = client.responses.create(
        model="demo", previous_response_id=first.id, tools=[TOOL],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18C"}])
    assert second.output_text == "It is 18C in Paris." and second.previous_response_id == first.id
    # The conversation went back to the model (through the fallback tool prompt of the stub's template):
    # the question, the call, the result, in that order.
    prompt = _prompt(engine, -1)
    asked, called, result = (prompt.index(s) for s in ("Weather in Paris?", '"city": "Paris"', "18C"))
    assert asked < called < result


def test_input_items_list_pages_through_the_stored_input(client, engine):
    engine.script = ["Done."]
    given = [{"role": "developer", "content": "Be brief."},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "one"}]},
             {"role": "assistant", "content": "two"}, {"role": "user", "content": "three"}]
    r = client.responses.create(model="demo", input=given)
    listed = client.responses.input_items.list(r.id)  # newest first, as OpenAI lists them
    assert [item.role for item in listed.data] == ["user", "assistant", "user", "developer"]
    assert listed.data[0].content[0].type == "input_text" and listed.data[0].content[0].text == "three"
    assert listed.data[1].content[0].type == "output_text" and len({i.id for i in listed.data}) == 4
    first = client.responses.input_items.list(r.id, order="asc", limit=2)
    assert [i.content[0].text for i in first.data] == ["Be brief.", "one"] and first.has_more
    rest = client.responses.input_items.list(r.id, order="asc", limit=2, after=first.data[-1].id)
    assert [i.content[0].text for i in rest.data] == ["two", "three"] and not rest.has_more
    assert [i.content[0].text for i in client.responses.input_items.list(r.id, order="asc")] == \
        ["Be brief.", "one", "two", "three"]  # the SDK's auto-pagination
    # `before` (in OpenAI's API reference; this SDK sends it as an extra query parameter)
    back = client.responses.input_items.list(r.id, order="asc", limit=2, extra_query={"before": rest.data[-1].id})
    assert [i.content[0].text for i in back.data] == ["one", "two"] and back.has_more  # the page just before
    start = client.responses.input_items.list(r.id, order="asc", extra_query={"before": rest.data[0].id})
    assert [i.content[0].text for i in start.data] == ["Be brief.", "one"] and not start.has_more
    newest = client.responses.input_items.list(r.id, extra_query={"before": first.data[0].id})  # desc: newer items come first
    assert [i.content[0].text for i in newest.data] == ["three", "two", "one"]
    between = client.responses.input_items.list(r.id, order="asc", after=first.data[0].id,
                                                extra_query={"before": rest.data[-1].id})
    assert [i.content[0].text for i in between.data] == ["one", "two"] and not between.has_more
    with pytest.raises(openai.BadRequestError, match="before"):
        client.responses.input_items.list(r.id, extra_query={"before": "msg_nope"})
    with pytest.raises(openai.BadRequestError, match="limit"):
        client.responses.input_items.list(r.id, limit=101)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list("resp_nope")


def test_text_format_json_schema_reaches_the_grammar(client, engine):
    engine.script = [THOUGHT + '{"city": "Paris"}']
    r = client.responses.create(model="demo", input="City?", text={"format": {
        "type": "json_schema", "name": "city", "schema": TOOL["parameters"], "strict": True}})
    assert json.loads(r.output_text) == {"city": "Paris"}
    spec = engine.seen_params[-1].structured_output
    assert spec.kind == "json_schema" and json.loads(spec.value)["required"] == ["city"]
    assert spec.reasoning is not None  # constrained after the thinking


def test_errors_have_the_spec_shape(client, engine, thinking_server):
    engine.script = ["x"]
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.retrieve("resp_nope")
    assert e.value.body["message"] == "Response with id 'resp_nope' not found."
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="demo", input="x", previous_response_id="resp_nope")
    assert e.value.code == "previous_response_not_found" and e.value.param == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="demo", input=[{"role": "user", "content": [
            {"type": "input_image", "image_url": "data:image/png;base64,AA=="}]}])
    assert e.value.param == "input[0].content[0]"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="demo", input="x", tools=[{"type": "web_search"}])
    assert e.value.param == "tools[0].type"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="x")
    with pytest.raises(openai.BadRequestError) as e:  # OpenAI's 400 (it was run, the result answering nothing)
        client.responses.create(model="demo", input=[
            {"type": "message", "role": "user", "content": "Weather?"},
            {"type": "function_call_output", "call_id": "call_nope", "output": "18C"}])
    assert e.value.body["message"] == "No tool call found for function call output with call_id call_nope."
    assert e.value.param == "input" and e.value.body["type"] == "invalid_request_error"
    r = client.responses.create(model="demo", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    kept = client.responses.create(model="demo", input="x")
    deleted = httpx.delete(f"{thinking_server.url}/v1/responses/{kept.id}")
    assert deleted.json() == {"id": kept.id, "object": "response.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(kept.id)



@pytest.mark.parametrize("stream", [True, False])
def test_client_that_leaves_aborts_and_frees(stub_server, stream):
    """A /v1/responses client gone mid-answer cancels its engine request (real stub timing, 1 ms a token)."""
    aborted = stub_server.metric("velollm_aborted_requests_total", model="demo")
    body = {"model": "demo", "input": "go on", "max_output_tokens": 200, "temperature": 0, "ignore_eos": True,
            "stream": stream}
    with httpx.Client(timeout=30) as http:
        if stream:
            with http.stream("POST", f"{stub_server.url}/v1/responses", json=body) as response:
                assert response.status_code == 200
                assert next(response.iter_lines()) == "event: response.created"
        else:
            with pytest.raises(httpx.TimeoutException):
                http.post(f"{stub_server.url}/v1/responses", json=body, timeout=0.05)
    now = stub_server.wait_metric("velollm_aborted_requests_total", lambda v: v >= aborted + 1, model="demo")
    assert now == aborted + 1
    assert stub_server.wait_metric("velollm_allocated_blocks", lambda v: v == 0, model="demo") == 0


@pytest.mark.parametrize("field,value,param", [
    ("metadata", {f"k{i}": "v" for i in range(17)}, "metadata"), ("metadata", {"k" * 65: "v"}, "metadata"),
    ("metadata", {"k": "v" * 513}, "metadata.k"), ("metadata", {"k": 1}, "metadata.k"),
    ("metadata", ["k"], "metadata"), ("user", 42, "user")])
def test_metadata_and_user_are_checked_as_openai_checks_them(client, engine, field, value, param):
    engine.script = ["Hi."]
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="demo", input="Hi", **{field: value})
    assert caught.value.body["param"] == param and caught.value.body["type"] == "invalid_request_error"
    at_limits = {f"{i:0>64}": "v" * 512 for i in range(16)}
    r = client.responses.create(model="demo", input="Hi", metadata=at_limits, user="u-1")
    assert r.metadata == at_limits and client.responses.retrieve(r.id).metadata == at_limits
