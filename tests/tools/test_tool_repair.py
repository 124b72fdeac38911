"""The malformed tool-call corpus: every case gets its expected outcome and calls."""

from __future__ import annotations

import json

import pytest

from tests.tools.corpus import CASES, TOOLS
from velollm.errors import InvalidRequest
from velollm.tools.tool_coerce import check_arguments
from velollm.tools.tool_parsers import ToolFamily, detect_family
from velollm.tools.tool_repair import RepairConfig, ToolRepairer


def test_corpus_is_large_and_covers_every_family() -> None:
    assert len(CASES) >= 50
    assert {c[1] for c in CASES} == set(ToolFamily)
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case_id,family,text,outcomes,calls", CASES, ids=[c[0] for c in CASES])
def test_corpus_case(
    case_id: str, family: ToolFamily, text: str, outcomes: list[str], calls: list[tuple[str, dict]]
) -> None:
    result = ToolRepairer(TOOLS, family).repair_text(text)
    assert [o.outcome for o in result.outcomes] == outcomes, [o.reason for o in result.outcomes]
    assert [(c.name, json.loads(c.arguments)) for c in result.calls] == calls
    for o in result.outcomes:
        if o.outcome == "failed":
            assert o.reason  # usable as a corrective message
    if "failed" in outcomes:
        # Nothing is dropped silently: the failed call's text stays in the content.
        assert result.content
        assert result.corrective_message()
    elif calls:
        assert "<tool_call>" not in result.content and "[TOOL_CALLS]" not in result.content


def test_failure_reasons_name_the_problem() -> None:
    r = ToolRepairer(TOOLS, ToolFamily.HERMES).repair_text(
        '<tool_call>{"name": "get_weather", "arguments": {"days": "x"}}</tool_call>'
    )
    msg = r.corrective_message()
    assert "missing required argument 'city'" in msg and "'days'" in msg
    r = ToolRepairer(TOOLS, ToolFamily.HERMES).repair_text('<tool_call>{"name": "nope", "arguments": {}}</tool_call>')
    assert "unknown tool 'nope'" in r.failed[0].reason and "get_weather" in r.failed[0].reason


def test_dedupe_is_configurable() -> None:
    text = (
        '<tool_call>{"name": "now", "arguments": {}}</tool_call><tool_call>{"name": "now", "arguments": {}}</tool_call>'
    )
    assert len(ToolRepairer(TOOLS, ToolFamily.HERMES).repair_text(text).calls) == 1
    kept = ToolRepairer(TOOLS, ToolFamily.HERMES, RepairConfig(dedupe=False)).repair_text(text)
    assert len(kept.calls) == 2 and kept.num_duplicates == 0


def test_no_coercion_when_disabled() -> None:
    text = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "days": "3"}}</tool_call>'
    r = ToolRepairer(TOOLS, ToolFamily.HERMES, RepairConfig(coerce=False)).repair_text(text)
    assert [o.outcome for o in r.outcomes] == ["failed"]


def test_an_integer_string_of_any_length_is_coerced_exactly() -> None:
    """A model's "999...9" (400 digits) for an integer was int(float(...)) = int(inf): an OverflowError; past 2**53
    it lost digits."""
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    for text, number in (("9" * 400, int("9" * 400)), (" -12.00 ", -12), ("9007199254740993", 2**53 + 1)):
        args, fixes, errors = check_arguments({"n": text}, schema)
        assert args == {"n": number} and fixes and not errors
    args, _, errors = check_arguments({"n": "9" * 5000}, schema)  # past int()'s 4300 digits: the schema's error
    assert args == {"n": "9" * 5000} and errors


def test_max_calls_keeps_the_first() -> None:
    text = '<tool_call>{"name": "now", "arguments": {}}</tool_call><tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>'
    r = ToolRepairer(TOOLS, ToolFamily.HERMES, RepairConfig(max_calls=1)).repair_text(text)
    assert [c.name for c in r.calls] == ["now"] and r.num_over_limit == 1


def test_repair_calls_from_an_upstream() -> None:
    upstream = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": "2"}'},
        },
        {"function": {"name": "now", "arguments": {}}},  # Ollama shape: object arguments, no id
        {"function": {"name": "search", "arguments": '{"query": "x",}'}},
    ]
    r = ToolRepairer(TOOLS).repair_calls(upstream)
    assert [o.outcome for o in r.outcomes] == ["repaired", "valid", "repaired"]
    assert r.calls[0].id == "call_1" and json.loads(r.calls[0].arguments) == {"city": "Paris", "days": 2}
    assert r.calls[1].id.startswith("call_") and r.calls[1].to_ollama(1, with_id=False) == {
        "function": {"index": 1, "name": "now", "arguments": {}}
    }
    assert r.calls[1].to_ollama(1) == {"id": r.calls[1].id, "function": {"index": 1, "name": "now", "arguments": {}}}


def test_gorilla_types_and_bad_schemas() -> None:
    tools = [{"name": "f", "parameters": {"type": "dict", "properties": {"x": {"type": "float"}}, "required": ["x"]}}]
    r = ToolRepairer(tools).repair_text('<tool_call>{"name": "f", "arguments": {"x": "2.5"}}</tool_call>')
    assert json.loads(r.calls[0].arguments) == {"x": 2.5}
    with pytest.raises(InvalidRequest):
        ToolRepairer([{"name": "g", "parameters": {"type": "object", "properties": {"x": {"type": 5}}}}])


def test_mistral_ids_are_nine_alphanumerics() -> None:
    r = ToolRepairer(TOOLS, ToolFamily.MISTRAL).repair_text('[TOOL_CALLS][{"name": "now", "arguments": {}}]')
    assert len(r.calls[0].id) == 9 and r.calls[0].id.isalnum()


@pytest.mark.parametrize(
    "template,model_type,family",
    [
        ("{% for t in tools %}{{ t | tojson }}{% endfor %}<tool_call>", None, ToolFamily.HERMES),
        ("[AVAILABLE_TOOLS]{{ tools }}[/AVAILABLE_TOOLS][TOOL_CALLS]", None, ToolFamily.MISTRAL),
        ("<|start_header_id|>ipython<|end_header_id|>{{ tools }}<|python_tag|>", None, ToolFamily.LLAMA3),
        (None, "llama", ToolFamily.LLAMA3),
        (None, "qwen2", ToolFamily.HERMES),
        (None, "mistral", ToolFamily.MISTRAL),
        ({"default": "x", "tool_use": "<tool_call>"}, "llama", ToolFamily.HERMES),
    ],
)
def test_detect_family(template: object, model_type: str | None, family: ToolFamily) -> None:
    assert detect_family(template, model_type) is family  # type: ignore[arg-type]
