"""Response objects and stream events, checked against the openai SDK's own types."""

from __future__ import annotations

import json

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from velollm.responses import ResponseEventStream, ResponseShell, parse_responses_request, sse_frame

EVENTS = TypeAdapter(ResponseStreamEvent)
REQ = parse_responses_request({"model": "m", "input": "hi", "tools": [
    {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}]})
USAGE = {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17,
         "completion_tokens_details": {"reasoning_tokens": 3}}


def _chunk(delta=None, finish=None, usage=None):
    choices = [] if usage else [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    return {"object": "chat.completion.chunk", "choices": choices, "usage": usage}


def _strict(event: dict) -> None:
    parsed = EVENTS.validate_python(event)
    assert parsed.type == event["type"]
    if "response" in event:
        Response.model_validate(event["response"])


def test_whole_completion_becomes_a_response():
    shell = ResponseShell(REQ)
    resp = shell.from_chat_completion({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "reasoning_content": "think",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": USAGE})
    parsed = Response.model_validate(resp)
    assert parsed.status == "completed" and parsed.id.startswith("resp_")
    assert [o.type for o in parsed.output] == ["reasoning", "function_call"]
    assert parsed.usage.output_tokens_details.reasoning_tokens == 3 and parsed.usage.total_tokens == 17


def test_cut_by_max_output_tokens_is_incomplete():
    resp = ResponseShell(REQ).from_chat_completion(
        {"choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "abc"}}]})
    assert resp["status"] == "incomplete" and resp["incomplete_details"] == {"reason": "max_output_tokens"}
    assert Response.model_validate(resp).output_text == "abc"


def test_stream_events_in_order_and_typed():
    stream = ResponseEventStream(ResponseShell(REQ))
    events = stream.start()
    for chunk in [_chunk({"role": "assistant", "reasoning_content": "Let me "}), _chunk({"reasoning_content": "see."}),
                  _chunk({"content": "Calling"}), _chunk({"content": " f."}),
                  _chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                          "function": {"name": "f", "arguments": ""}}]}),
                  _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
                  _chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
                  _chunk(finish="tool_calls"), _chunk(usage=USAGE)]:
        events += stream.chunk(chunk)
    events += stream.finish()
    for e in events:
        _strict(e)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.reasoning_text.delta",
        "response.reasoning_text.delta", "response.reasoning_text.done", "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    final = Response.model_validate(events[-1]["response"])
    assert final.output_text == "Calling f."
    assert final.output[2].arguments == '{"a": 1}' and final.output[2].call_id == "call_1"
    assert final.output[0].content[0].text == "Let me see."
    assert final.usage.input_tokens == 10
    frame = sse_frame(events[0]).decode()
    assert frame.startswith("event: response.created\ndata: {") and frame.endswith("\n\n")
    assert json.loads(frame.split("data: ", 1)[1])["type"] == "response.created"


@pytest.mark.parametrize("finish,status", [("length", "response.incomplete"), ("stop", "response.completed")])
def test_stream_end_status(finish, status):
    stream = ResponseEventStream(ResponseShell(REQ))
    stream.start()
    stream.chunk(_chunk({"content": "x"}))
    stream.chunk(_chunk(finish=finish))
    last = stream.finish()[-1]
    _strict(last)
    assert last["type"] == status


def test_cut_after_the_thinking_closed_only_the_open_item_is_incomplete():
    stream = ResponseEventStream(ResponseShell(REQ))
    events = stream.start()
    for chunk in [_chunk({"reasoning_content": "done thinking"}), _chunk({"content": "Hel"}), _chunk(finish="length")]:
        events += stream.chunk(chunk)
    events += stream.finish()
    for e in events:
        _strict(e)
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [(i["type"], i["status"]) for i in done] == [("reasoning", "completed"), ("message", "incomplete")]
    final = events[-1]["response"]
    assert final["status"] == "incomplete" and [o["status"] for o in final["output"]] == ["completed", "incomplete"]


def test_failure_mid_stream():
    stream = ResponseEventStream(ResponseShell(REQ))
    stream.start()
    stream.chunk(_chunk({"content": "x"}))
    error, failed = stream.fail("engine died", code="server_error")
    for e in (error, failed):
        _strict(e)
    assert failed["response"]["status"] == "failed" and failed["response"]["error"]["message"] == "engine died"
    assert [o["status"] for o in failed["response"]["output"]] == ["incomplete"]  # the item the error cut


def test_failure_mid_item_keeps_the_sequence_numbers_unbroken():
    """The item the error cut is closed without its done events: their numbers were taken all the same, so a
    background run's frames (counted by sequence number for `starting_after`) and the numbers parted ways."""
    stream = ResponseEventStream(ResponseShell(REQ))
    events = stream.start() + stream.chunk(_chunk({"content": "x"})) + stream.fail("engine died", code="server_error")
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_an_answer_that_could_not_be_stored_ends_failed_in_its_place():
    stream = ResponseEventStream(ResponseShell(REQ))
    started = stream.start() + stream.chunk(_chunk({"content": "x"}, finish="stop"))
    final = stream.finish()
    events = stream.fail_instead(final, "the response could not be stored", "server_error")
    for e in events:
        _strict(e)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"] and final[-1] not in events
    assert [e["sequence_number"] for e in started + events] == list(range(len(started) + len(events)))
    assert events[-1]["response"]["error"]["message"] == "the response could not be stored"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "x"  # what it said is kept


def test_a_cached_response_replays_to_the_same_output_with_new_ids():
    from velollm.responses import replay_chunks

    live = ResponseEventStream(ResponseShell(REQ))
    live.start()
    for c in (_chunk({"reasoning_content": "think"}), _chunk({"content": "Hi"}),
              _chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{}"}}]}),
              _chunk(finish="tool_calls"), _chunk(usage=USAGE)):
        live.chunk(c)
    live.finish()
    again = ResponseEventStream(ResponseShell(REQ))
    events = again.start() + [e for c in replay_chunks(live.response) for e in again.chunk(c)] + again.finish()
    for event in events:
        _strict(event)
    old, new = live.response, again.response
    strip = ("id", "call_id")
    assert [{k: v for k, v in i.items() if k not in strip} for i in new["output"]] == \
        [{k: v for k, v in i.items() if k not in strip} for i in old["output"]]
    assert not {i["id"] for i in new["output"]} & {i["id"] for i in old["output"]}
    assert new["output"][2]["call_id"] != "call_1" and new["id"] != old["id"]
    assert new["usage"]["input_tokens_details"]["cached_tokens"] == old["usage"]["input_tokens"] == 10
    assert new["usage"]["output_tokens_details"]["reasoning_tokens"] == 3 and new["status"] == "completed"


def test_a_background_stream_starts_queued_shows_its_progress_and_can_be_cancelled():
    stream = ResponseEventStream(ResponseShell(parse_responses_request({"model": "m", "input": "hi",
                                                                        "background": True})))
    start = stream.start()
    for event in start:
        _strict(event)
    assert [e["type"] for e in start] == ["response.created", "response.queued", "response.in_progress"]
    assert [e["response"]["status"] for e in start] == ["queued", "queued", "in_progress"]
    assert start[0]["response"]["background"] is True
    stream.chunk(_chunk({"reasoning_content": "hmm"}))
    stream.chunk(_chunk({"content": "Hel"}))
    midway = Response.model_validate(stream.snapshot())  # GET of a running background response
    assert midway.status == "in_progress" and midway.output_text == "Hel"
    assert midway.output[0].content[0].text == "hmm" and stream.response["output"] == []  # its own copy
    stream.chunk(_chunk({"content": "lo"}))
    ending = stream.cancel()  # the cut item's done events, then the response in response.incomplete
    for event in ending:
        _strict(event)
    assert [e["type"] for e in ending] == ["response.output_text.done", "response.content_part.done",
                                           "response.output_item.done", "response.incomplete"]
    cancelled = Response.model_validate(ending[-1]["response"])
    assert cancelled.status == "cancelled" and cancelled.output_text == "Hello"
    assert stream.response is ending[-1]["response"]
    assert [o.status for o in cancelled.output] == ["completed", "incomplete"]  # the cut item
