"""Streams put back together for storage, and cached answers replayed in each framing."""

from __future__ import annotations

import json
import re

import pytest

from velollm.cache.capture import capture
from velollm.cache.policy import CacheFieldError, bypass_reason, cache_policy
from velollm.cache.replay import replay
from velollm.wire.framing import SSE_DONE, ndjson_line, sse_event


def chunk(delta=None, finish=None, **extra):
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}], **extra}


def sse(*chunks, done=True):
    return b"".join(sse_event(c) for c in chunks) + (SSE_DONE if done else b"")


def test_openai_chat_stream_with_tool_call_fragments():
    raw = sse(chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"}),
              chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                     "function": {"name": "get", "arguments": ""}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
              chunk(finish="tool_calls"),
              {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
               "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})
    whole = capture("chat", raw, "text/event-stream; charset=utf-8")
    message = whole["choices"][0]["message"]
    assert message["content"] == "Hello" and whole["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"] == [{"id": "call_1", "type": "function",
                                      "function": {"name": "get", "arguments": "{\"a\": 1}"}}]
    assert whole["usage"]["total_tokens"] == 8


@pytest.mark.parametrize("raw", [
    sse(chunk({"content": "Hel"}), done=False),  # cut off
    sse(chunk({"content": "Hel"})),  # no finish_reason
    sse(chunk({"content": "Hel"}), {"error": {"message": "boom"}}),
    b"data: {not json\n\n" + SSE_DONE,
])
def test_incomplete_or_failed_streams_are_not_stored(raw):
    assert capture("chat", raw, "text/event-stream") is None


def test_ollama_streams_and_whole_bodies():
    lines = [{"model": "m", "created_at": "t", "message": {"role": "assistant", "content": "Hi"}, "done": False},
             {"model": "m", "created_at": "t", "message": {"role": "assistant", "content": " there"}, "done": False},
             {"model": "m", "created_at": "t", "message": {"role": "assistant", "content": ""}, "done": True,
              "done_reason": "stop", "eval_count": 2, "prompt_eval_count": 4}]
    raw = b"".join(ndjson_line(x) for x in lines)
    whole = capture("ollama_chat", raw, "application/x-ndjson")
    assert whole["message"]["content"] == "Hi there" and whole["eval_count"] == 2
    assert capture("ollama_chat", raw[: -len(ndjson_line(lines[-1]))], "application/x-ndjson") is None
    gen = {"model": "m", "response": "ok", "done": True, "done_reason": "stop"}
    assert capture("ollama_generate", json.dumps(gen).encode(), "application/json") == gen
    assert capture("ollama_generate", b'{"error": "x"}', "application/json") is None


def test_replay_as_json_and_as_streams():
    answer = {"id": "old", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris"}, "logprobs": None,
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}}
    parts, media = replay("chat", answer, {"model": "m"}, 1000)
    body = json.loads(b"".join(parts))
    assert media == "application/json" and body["id"] != "old" and body["choices"] == answer["choices"]
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 9}
    parts, media = replay("chat", answer, {"model": "m", "stream": True, "stream_options": {"include_usage": True}},
                          1000)
    assert media == "text/event-stream" and parts[-1] == SSE_DONE
    again = capture("chat", b"".join(parts), media)  # what a client reassembles is the cached answer
    assert again["choices"][0]["message"] == answer["choices"][0]["message"]
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == 9
    ollama = {"model": "m", "created_at": "t", "message": {"role": "assistant", "content": "Paris"}, "done": True,
              "done_reason": "stop", "eval_count": 1, "total_duration": 5}
    parts, media = replay("ollama_chat", ollama, {"model": "m"}, 1234)  # Ollama streams by default
    lines = [json.loads(p) for p in parts]
    assert media == "application/x-ndjson" and [x["done"] for x in lines] == [False, True]
    assert lines[0]["message"]["content"] == "Paris" and lines[-1]["total_duration"] == 1234


def test_policy_from_body_and_headers():
    assert cache_policy({"cache": {"no-cache": True, "ttl": 60}}, {}).no_cache
    policy = cache_policy({}, {"cache-control": "no-store, max-age=30"})
    assert policy.no_store and policy.max_age_s == 30 and not policy.no_cache
    assert cache_policy({"cache": {"ttl": 0}}, {}).no_store
    for bad in ({"cache": "yes"}, {"cache": {"no-cache": "true"}}, {"cache": {"ttl": -1}}, {"cache": {"nope": 1}}):
        with pytest.raises(CacheFieldError):
            cache_policy(bad, {})


def test_default_bypass_rules():
    assert bypass_reason("chat", {"n": 2}) == "n_sampled"
    assert bypass_reason("chat", {"n": 2, "temperature": 0}) is None
    assert bypass_reason("completion", {"best_of": 3, "temperature": 0.7}) == "n_sampled"
    assert bypass_reason("ollama_generate", {"model": "m"}) == "load"
    assert bypass_reason("ollama_chat", {"model": "m", "messages": []}) == "load"
    assert bypass_reason("chat", {"temperature": 0.7}) is None


def _response(status="completed", output=None):
    return {"id": "resp_1", "object": "response", "status": status, "usage": None,
            "output": output if output is not None else [{"type": "message", "id": "msg_1", "content": []}]}


def test_responses_answers_are_captured_whole_or_from_the_final_event():
    from velollm.responses import sse_frame

    whole = _response()
    assert capture("responses", json.dumps(whole).encode(), "application/json") == whole
    events = [{"type": "response.created", "sequence_number": 0, "response": _response("in_progress")},
              {"type": "response.incomplete", "sequence_number": 1, "response": _response("incomplete")}]
    raw = b"".join(sse_frame(e) for e in events)
    assert capture("responses", raw, "text/event-stream")["status"] == "incomplete"
    assert capture("responses", raw[: raw.rindex(b"event:")], "text/event-stream") is None  # cut short
    assert capture("responses", json.dumps(_response("failed")).encode(), "application/json") is None
    hosted = _response(output=[{"type": "web_search_call", "id": "ws_1"}])  # nothing the replay can rebuild
    assert capture("responses", json.dumps(hosted).encode(), "application/json") is None


def test_only_stateless_responses_requests_are_cached():
    assert bypass_reason("responses", {"model": "m", "input": "hi"}) is None
    assert bypass_reason("responses", {"model": "m", "input": "hi", "previous_response_id": "resp_1"}) == "stateful"
    assert bypass_reason("responses", {"model": "m", "input": "hi", "background": True}) == "stateful"  # polled
    assert bypass_reason("chat", {"model": "m", "messages": [], "store": True}) == "stored"  # a new completion each
    assert bypass_reason("chat", {"model": "m", "messages": [], "store": False}) is None


def _call(call_id: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": "get", "arguments": "{\"a\": 1}"}}


def test_a_replayed_answer_gets_fresh_completion_and_tool_call_ids():
    """Agents key tool results on the call ids: two turns answered from the cache must not share one."""
    calls = [_call("call_AbCdEfGhIjKlMnOpQrStUvWx"), _call("call_ab12cd34"), _call("a1B2c3D4e")]
    answer = {"id": "chatcmpl-old", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": calls},
                           "logprobs": None, "finish_reason": "tool_calls"}]}
    whole = [json.loads(b"".join(replay("chat", answer, {"model": "m"}, 1)[0])) for _ in range(2)]
    parts, media = replay("chat", answer, {"model": "m", "stream": True}, 1)
    streamed = capture("chat", b"".join(parts), media)
    seen = [c["id"] for body in [*whole, streamed] for c in body["choices"][0]["message"]["tool_calls"]]
    assert len(set(seen)) == len(seen) and not set(seen) & {c["id"] for c in calls}
    new_mixed, new_lower, new_bare = seen[:3]  # each keeps its kind's form (Mistral: 9 alphanumerics)
    assert len(new_mixed) == len(calls[0]["id"]) and re.fullmatch(r"call_[a-z0-9]{8}", new_lower)
    assert re.fullmatch(r"[A-Za-z0-9]{9}", new_bare)
    assert {b["id"] for b in whole} & {"chatcmpl-old"} == set() and whole[0]["id"] != whole[1]["id"]
    assert all(b["created"] > 1 for b in whole) and streamed["created"] > 1
    assert whole[0]["choices"][0]["message"]["tool_calls"][0]["function"] == calls[0]["function"]
    assert answer["choices"][0]["message"]["tool_calls"] == calls  # the stored answer is left as it was


def test_a_replayed_ollama_answer_gets_fresh_tool_call_ids():
    """Ollama's calls carry ids since v0.12.10 (an upstream Ollama's answer, cached by a proxy)."""
    call = {"id": "call_ab12cd34", "function": {"index": 0, "name": "get", "arguments": {"a": 1}}}
    answer = {"model": "m", "created_at": "2020-01-01T00:00:00Z", "done": True, "done_reason": "stop",
              "message": {"role": "assistant", "content": "", "tool_calls": [call]}}
    whole = json.loads(b"".join(replay("ollama_chat", answer, {"model": "m", "stream": False}, 1)[0]))
    lines = [json.loads(p) for p in replay("ollama_chat", answer, {"model": "m"}, 1)[0]]
    ids = [whole["message"]["tool_calls"][0]["id"], lines[0]["message"]["tool_calls"][0]["id"]]
    assert len(set(ids)) == 2 and call["id"] not in ids and all(re.fullmatch(r"call_[a-z0-9]{8}", i) for i in ids)
    assert whole["created_at"] != answer["created_at"]
    assert whole["message"]["tool_calls"][0]["function"] == call["function"]
