"""ThinkTagParser: whole and streamed splits agree, whatever the chunking."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velollm.reasoning import ReasoningDelta, ThinkTagParser

PARSER = ThinkTagParser()

CASES = [
    # (answer, prompt opened <think>, reasoning, content)
    ("<think>\nLet me see.\n</think>\n\nParis.", False, "Let me see.", "Paris."),
    ("<think>\n\n</think>\n\nParis.", False, "", "Paris."),  # Qwen3 thinking about nothing
    ("  <think>a</think>b", False, "a", "b"),
    ("Paris.", False, "", "Paris."),  # no-think mode: all content
    ("Paris <think>x</think>", False, "", "Paris <think>x</think>"),  # a tag later is content
    ("Let me see.\n</think>\n\nParis.", True, "Let me see.", "Paris."),  # R1: the prompt opened it
    ("<think>cut short by max_tok", False, "cut short by max_tok", ""),
    ("still thinking </thi", True, "still thinking </thi", ""),
    ("<thi", False, "", "<thi"),  # never became a tag
    ("<think>a</think>", False, "a", ""),
    ("<think>a < b </ c</think> answer </think> more", False, "a < b </ c", "answer </think> more"),
    ('<think>x</think>\n<tool_call>\n{"name": "f"}\n</tool_call>', False, "x",
     '<tool_call>\n{"name": "f"}\n</tool_call>'),
]


@pytest.mark.parametrize("text,opened,reasoning,content", CASES)
def test_whole_answer_split(text, opened, reasoning, content):
    assert PARSER.split(text, in_reasoning=opened) == ReasoningDelta(reasoning, content)


def _streamed(text: str, cuts: list[int], opened: bool) -> tuple[ReasoningDelta, list[ReasoningDelta]]:
    stream = PARSER.stream(in_reasoning=opened)
    bounds = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    pieces = [stream.feed(text[a:b]) for a, b in zip(bounds, bounds[1:])] + [stream.finish()]
    total = ReasoningDelta()
    for p in pieces:
        total += p
    return total, pieces


@pytest.mark.parametrize("text,opened,reasoning,content", CASES)
def test_every_one_character_chunking_gives_the_whole_split(text, opened, reasoning, content):
    total, _ = _streamed(text, list(range(len(text))), opened)
    assert total == ReasoningDelta(reasoning, content)


@settings(max_examples=200, deadline=None)
@given(reasoning=st.text(alphabet="ab <>/\nthink", max_size=30).filter(lambda s: "</think>" not in s),
       content=st.text(alphabet="xy <>/\nthink", max_size=30), cuts=st.lists(st.integers(0, 80), max_size=8),
       opened=st.booleans())
def test_streamed_split_equals_whole_split(reasoning, content, cuts, opened):
    text = ("" if opened else "<think>") + reasoning + "</think>" + content
    total, _ = _streamed(text, cuts, opened)
    assert total == PARSER.split(text, in_reasoning=opened)
    assert total.reasoning == reasoning.strip()
    assert total.content == content.lstrip()


def test_stream_emits_reasoning_before_the_end_and_holds_only_a_possible_tag():
    stream = PARSER.stream()
    assert stream.in_reasoning
    assert stream.feed("<thi") == ReasoningDelta()
    assert stream.feed("nk>\nI think") == ReasoningDelta(reasoning="I think")
    assert stream.feed(" so </th") == ReasoningDelta(reasoning=" so")  # "</th" and the space held
    assert stream.in_reasoning
    assert stream.feed("ink>\n\n") == ReasoningDelta()
    assert not stream.in_reasoning
    assert stream.feed("Yes") == ReasoningDelta(content="Yes")
    assert stream.finish() == ReasoningDelta()


def test_prompt_that_opens_the_thinking_is_recognised():
    assert PARSER.prompt_opens_reasoning("<|im_start|>assistant\n<think>\n")
    assert not PARSER.prompt_opens_reasoning("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not PARSER.prompt_opens_reasoning("<|im_start|>assistant\n")
