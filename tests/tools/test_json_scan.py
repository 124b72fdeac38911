"""The resumable JSON scan behind json_span and the streaming parser: same answers, linear cost."""

from __future__ import annotations

import json
import random

import pytest

from tests.tools.corpus import TOOLS
from velollm.tools.tool_parsers import (
    JsonScan,
    ToolFamily,
    _opens_single_quote,
    json_span,
)
from velollm.tools.tool_repair import ToolRepairer
from velollm.tools.tool_schema import tool_specs
from velollm.tools.tool_stream import StreamingToolParser

H = ToolFamily.HERMES


def _reference_span(text: str, start: int) -> tuple[int, bool]:
    """json_span as it was written before the scan became resumable (one full pass)."""
    depth, quote, escaped = 0, "", False
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch == '"' or (ch == "'" and _opens_single_quote(text, i)):
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1, True
    return len(text), False


SAMPLES = [
    '{"a": "x } ] \\" {", "b": [1, {"c": 2}]} tail',
    "{'a': 'it''s', \"b\": {}} x",
    '{"a": "it\'s [", "b": 1}',
    '}{"a": 1}}',
    '[{"a": [1, 2]}, "]"]]',
    '{"a": "unterminated',
    "  {'k': [1, 'v}']}",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_resumed_scan_matches_json_span(text: str) -> None:
    rng = random.Random(len(text))
    for start in range(len(text)):
        expected = _reference_span(text, start)
        assert json_span(text, start) == expected
        for _ in range(5):  # the same text arriving in random pieces
            scan, end, cut = JsonScan(start), None, start
            while cut < len(text) and end is None:
                cut = min(len(text), cut + rng.randint(1, 4))
                end = scan.advance(text[:cut])
            assert ((end, True) if end is not None else (len(text), False)) == expected


def _long_call(n: int) -> tuple[str, str]:
    query = ("ab {c} [d] \\\"e\\\" it's " * (n // 20 + 1))[:n].rstrip("\\")
    args = '{"query": "' + query + '"}'
    return f'<tool_call>{{"name": "search", "arguments": {args}}}</tool_call>', args


@pytest.mark.parametrize("incremental", [True, False])
def test_long_call_streamed_in_small_pieces(incremental: bool) -> None:
    text, args = _long_call(20_000)
    parser = StreamingToolParser(H, ToolRepairer(TOOLS, H), incremental=incremental)
    scanned = []
    advance = JsonScan.advance

    def counting(self, text):  # characters each scan step walks over
        before = self.pos
        try:
            return advance(self, text)
        finally:
            scanned.append(self.pos - before)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(JsonScan, "advance", counting)
        deltas = [parser.feed(text[i : i + 3]) for i in range(0, len(text), 3)] + [parser.finish()]
    streamed = "".join(t.arguments or "" for d in deltas for t in d.tool_calls)
    assert "".join(d.content for d in deltas) == ""
    assert [c.name for c in parser.calls] == ["search"]
    assert json.loads(streamed) == json.loads(args) == json.loads(parser.calls[0].arguments)
    if incremental:  # arguments went out as they came, not in one piece at the end
        assert sum(1 for d in deltas for t in d.tool_calls if t.arguments) > 1000
    # Each delta scans only new text (a rescan per delta walked the whole call again: quadratic).
    assert sum(scanned) <= 3 * len(text), (sum(scanned), len(text))


def test_parsed_schema_is_cached() -> None:
    [spec] = tool_specs([t for t in TOOLS if t["function"]["name"] == "search"])
    assert spec.parameters is spec.parameters
    assert spec.to_openai()["function"]["parameters"] == spec.parameters
    assert spec.to_openai()["function"]["parameters"] is not spec.parameters


def test_validator_built_once_per_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    from velollm.tools import tool_repair

    built: list[object] = []
    real = tool_repair.schema_validator
    monkeypatch.setattr(tool_repair, "schema_validator", lambda schema: built.append(schema) or real(schema))
    repairer = ToolRepairer(TOOLS, H)
    for query in ("a", "b", "c"):
        result = repairer.repair_text(f'<tool_call>{{"name": "search", "arguments": {{"query": "{query}"}}}}</tool_call>')
        assert [c.name for c in result.calls] == ["search"]
    assert len(built) == 1
