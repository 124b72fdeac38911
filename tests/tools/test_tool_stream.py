"""Streaming tool-call parser: deltas concatenate to the calls, markers split anywhere."""

from __future__ import annotations

import json
import random

import pytest

from tests.tools.corpus import CASES, TOOLS
from velollm.tools.tool_parsers import ToolFamily
from velollm.tools.tool_repair import RepairConfig, ToolRepairer
from velollm.tools.tool_stream import (
    StreamDelta,
    StreamingToolParser,
    closing_suffix,
)

H, L, M = ToolFamily.HERMES, ToolFamily.LLAMA3, ToolFamily.MISTRAL


def _chunks(text: str, rng: random.Random, max_len: int) -> list[str]:
    out, i = [], 0
    while i < len(text):
        k = rng.randint(1, max_len)
        out.append(text[i : i + k])
        i += k
    return out


def _run(parser: StreamingToolParser, pieces: list[str]) -> tuple[str, list[dict], list[StreamDelta]]:
    deltas = [parser.feed(p) for p in pieces] + [parser.finish()]
    content, calls = "", {}
    for d in deltas:
        content += d.content
        for t in d.tool_calls:
            if t.index not in calls:
                # The first delta of a call carries id, type, name and an empty arguments string (as
                # OpenAI's first chunk does), before any argument text.
                assert t.id and t.name and t.to_openai()["type"] == "function", t
                assert t.arguments == "" and t.to_openai()["function"]["arguments"] == "", t
                calls[t.index] = {"id": t.id, "name": t.name, "arguments": ""}
            else:
                assert t.id is None and t.name is None
            if t.arguments is not None:
                calls[t.index]["arguments"] += t.arguments
    return content, [calls[i] for i in sorted(calls)], deltas


WELL_FORMED = [
    (
        H,
        'Let me check. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris {x} \\"q\\"", "days": 3}}\n</tool_call>\n<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>',
        "Let me check. ",
        [("get_weather", {"city": 'Paris {x} "q"', "days": 3}), ("now", {})],
    ),
    (H, '<tool_call>\n{"name": "now"}\n</tool_call>', "", [("now", {})]),
    (
        L,
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}; {"name": "now", "parameters": {}}<|eom_id|>',
        "",
        [("get_weather", {"city": "Oslo"}), ("now", {})],
    ),
    (
        L,
        '{"name": "search", "parameters": {"query": "a } b", "tags": ["x", "y"]}}',
        "",
        [("search", {"query": "a } b", "tags": ["x", "y"]})],
    ),
    (
        M,
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Rome"}}, {"name": "now", "arguments": {}}]',
        "",
        [("get_weather", {"city": "Rome"}), ("now", {})],
    ),
    (M, '[TOOL_CALLS]get_weather[ARGS]{"city": "Rome"}', "", [("get_weather", {"city": "Rome"})]),
    (H, "plain text with < and [ and { braces } and <tool", "plain text with < and [ and { braces } and <tool", []),
    (L, "No call here, just {curly} text and [TOOL", "No call here, just {curly} text and [TOOL", []),
]


@pytest.mark.parametrize("incremental", [True, False])
@pytest.mark.parametrize("family,text,content,calls", WELL_FORMED)
def test_deltas_concatenate_to_the_calls(
    family: ToolFamily, text: str, content: str, calls: list, incremental: bool
) -> None:
    rng = random.Random(hash(text) & 0xFFFF)
    for max_len in (1, 2, 3, 7, len(text)):  # 1: every marker is split across deltas
        parser = StreamingToolParser(family, ToolRepairer(TOOLS, family), incremental=incremental)
        got_content, got_calls, _ = _run(parser, _chunks(text, rng, max_len))
        assert got_content == content
        assert [(c["name"], json.loads(c["arguments"])) for c in got_calls] == calls
        assert parser.has_tool_calls == bool(calls)
        assert [c.name for c in parser.calls] == [c[0] for c in calls]
        assert len({c["id"] for c in got_calls}) == len(got_calls)


def test_arguments_stream_in_fragments_when_incremental() -> None:
    text = '<tool_call>\n{"name": "search", "arguments": {"query": "a long query string"}}\n</tool_call>'
    parser = StreamingToolParser(H, ToolRepairer(TOOLS, H), incremental=True)
    _, calls, deltas = _run(parser, list(text))
    pieces = [t.arguments for d in deltas for t in d.tool_calls if t.arguments]
    assert len(pieces) > 5 and "".join(pieces) == calls[0]["arguments"]


@pytest.mark.parametrize("incremental", [True, False])
def test_repeated_call_is_dropped_as_in_a_whole_answer(incremental: bool) -> None:
    """Constrained (incremental) streams sent a call repeated with the same arguments twice, while the
    whole answer's repair keeps it once (a small model under tool_choice=required repeats itself)."""
    text = ('{"name": "get_weather", "parameters": {"city"  :"Oslo"}}; {"name": "get_weather", "parameters": '
            '{"city":"Oslo"}}; {"name": "now", "parameters": {}}')
    whole = [(c.name, json.loads(c.arguments)) for c in ToolRepairer(TOOLS, L).repair_text(text).calls]
    assert whole == [("get_weather", {"city": "Oslo"}), ("now", {})]
    for max_len in (1, 3, len(text)):
        parser = StreamingToolParser(L, ToolRepairer(TOOLS, L), incremental=incremental)
        _, calls, _ = _run(parser, _chunks(text, random.Random(max_len), max_len))
        assert [(c["name"], json.loads(c["arguments"])) for c in calls] == whole
        assert parser.num_duplicates == 1 and [c.name for c in parser.calls] == ["get_weather", "now"]


def test_partial_marker_is_held_back_then_released() -> None:
    parser = StreamingToolParser(H, ToolRepairer(TOOLS, H))
    assert parser.feed("Hello <tool").content == "Hello "
    assert parser.feed("box> world").content == "<toolbox> world"
    assert not parser.finish()


def test_no_argument_call_gets_empty_object() -> None:
    parser = StreamingToolParser(L, ToolRepairer(TOOLS, L))
    _, calls, _ = _run(parser, ['{"name": "now"', "}"])
    assert calls[0]["arguments"] == "{}"


@pytest.mark.parametrize("case_id,family,text,outcomes,expected", CASES, ids=[c[0] for c in CASES])
def test_buffered_stream_matches_whole_text_repair(
    case_id: str, family: ToolFamily, text: str, outcomes: list, expected: list
) -> None:
    parser = StreamingToolParser(family, ToolRepairer(TOOLS, family), incremental=False)
    content, calls, _ = _run(parser, _chunks(text, random.Random(len(text)), 4))
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == expected
    # valid vs repaired may differ (the stream skips fences itself); failures must not.
    assert [o.outcome == "failed" for o in parser.outcomes] == [o == "failed" for o in outcomes]
    if "failed" in outcomes:
        assert content  # the failed call's text goes out as content, never dropped


def test_buffered_mode_honours_max_calls() -> None:
    text = '<tool_call>{"name": "now"}</tool_call><tool_call>{"name": "get_weather", "arguments": {"city": "X"}}</tool_call>'
    parser = StreamingToolParser(H, ToolRepairer(TOOLS, H, RepairConfig(max_calls=1)), incremental=False)
    _, calls, _ = _run(parser, [text])
    assert [c["name"] for c in calls] == ["now"]


def test_truncated_streamed_call_is_closed() -> None:
    parser = StreamingToolParser(H, ToolRepairer(TOOLS, H), incremental=True)
    _, calls, _ = _run(parser, ['<tool_call>{"name": "search", "arguments": {"query": "pizza', " near"])
    assert json.loads(calls[0]["arguments"]) == {"query": "pizza near"}
    assert parser.outcomes[0].outcome == "repaired"


def test_a_call_cut_short_before_a_required_argument_is_not_made_whole() -> None:
    """max_tokens cut the call before `enabled` (required): no repair makes a call of its schema, so the stream
    does not close the arguments into one ({"time": "07:00", "ena": null}); it is no call (finish_reason stays
    the engine's "length", as for the answer not streamed), and its arguments end where the model stopped."""
    parser = StreamingToolParser(H, ToolRepairer(TOOLS, H), incremental=True)
    text = '<tool_call>{"name": "set_alarm", "arguments": {"time": "07:00", "ena'
    _, calls, _ = _run(parser, [text[:40], text[40:]])
    assert not parser.has_tool_calls
    assert [c["arguments"] for c in calls] == ['{"time": "07:00", "ena']
    assert [o.outcome for o in parser.outcomes if o.outcome == "failed"]


@pytest.mark.parametrize("text, suffix", [('{"a": "x', '"}'), ('{"a": 1, "en', '": null}'), ('{"a":', " null}"),
                                          ('{"a": 1,', '"": null}'), ("[1, 2,", " null]"),
                                          ('{"a": [1, {"b": "c"', "}]}")])
def test_closing_suffix_makes_json(text: str, suffix: str) -> None:
    assert closing_suffix(text) == suffix
    json.loads(text + suffix)
