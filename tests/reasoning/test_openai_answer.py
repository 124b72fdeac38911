"""OpenAIAnswerSplit: upstream answers with <think> in content come back split, whole and streamed."""

from __future__ import annotations

import copy

from velollm.reasoning import ThinkTagParser
from velollm.reasoning.openai_answer import OpenAIAnswerSplit

ANSWER = "<think>\nThe user greets.\n</think>\n\nHello!"


def _completion(content, **message):
    return {"object": "chat.completion", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content, **message}}]}


def test_whole_answer():
    out = OpenAIAnswerSplit(ThinkTagParser()).completion(_completion(ANSWER))
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "Hello!",
                                            "reasoning_content": "The user greets."}


def test_whole_answer_thinking_dropped_and_upstream_split_untouched():
    out = OpenAIAnswerSplit(ThinkTagParser(), keep_reasoning=False).completion(_completion(ANSWER))
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "Hello!"}
    already = _completion("<think>kept as sent</think>x", reasoning="upstream's")
    assert OpenAIAnswerSplit(ThinkTagParser()).completion(copy.deepcopy(already)) == already


def test_tool_call_answer_gets_null_content():
    out = OpenAIAnswerSplit(ThinkTagParser()).completion(_completion(
        "<think>use f</think>", tool_calls=[{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]))
    assert out["choices"][0]["message"]["content"] is None
    assert out["choices"][0]["message"]["reasoning_content"] == "use f"


def _chunks(pieces):
    out = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    out += [{"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    return out + [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]


def test_stream_split_in_any_chunking():
    for size in (1, 3, 7, len(ANSWER)):
        split = OpenAIAnswerSplit(ThinkTagParser())
        pieces = [ANSWER[i:i + size] for i in range(0, len(ANSWER), size)]
        deltas = [split.chunk(c)["choices"][0]["delta"] for c in _chunks(pieces)]
        assert "".join(d.get("reasoning_content", "") for d in deltas) == "The user greets."
        assert "".join(d.get("content") or "" for d in deltas) == "Hello!"
        assert deltas[0]["role"] == "assistant"


def test_stream_that_holds_a_possible_tag_flushes_it_at_the_end():
    split = OpenAIAnswerSplit(ThinkTagParser())
    deltas = [split.chunk(c)["choices"][0]["delta"] for c in _chunks(["<thi"])]
    assert "".join(d.get("content") or "" for d in deltas) == "<thi"


def test_stream_from_an_upstream_that_splits_passes_through():
    split = OpenAIAnswerSplit(ThinkTagParser())
    chunk = {"choices": [{"index": 0, "delta": {"reasoning_content": "hm"}, "finish_reason": None}]}
    assert split.chunk(copy.deepcopy(chunk)) == chunk
    later = {"choices": [{"index": 0, "delta": {"content": "<think>x"}, "finish_reason": None}]}
    assert split.chunk(copy.deepcopy(later)) == later
