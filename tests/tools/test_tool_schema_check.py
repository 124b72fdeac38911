"""tool_specs checks each parameters schema against its metaschema once per distinct schema: a request checks
its tools several times (parse, session, prompt) and a client sends them every turn."""

from __future__ import annotations

import copy

import pytest

from velollm.errors import InvalidRequest
from velollm.tools import tool_schema
from velollm.tools.tool_schema import tool_specs


def _tools(n: int) -> list[dict]:
    return [{"type": "function", "function": {"name": f"f{i}", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "n": {"type": "integer", "minimum": i}}}}}
        for i in range(n)]


def test_each_schema_is_checked_once(monkeypatch):
    tool_schema._checked.cache_clear()
    checks = []
    real = tool_schema._metaschema_check
    monkeypatch.setattr(tool_schema, "_metaschema_check", lambda schema: checks.append(schema) or real(schema))
    tools = _tools(30)
    first = tool_specs(tools)
    assert len(checks) == 30
    # the same tools again (the session, the prompt, the next turn), as new objects: no new check
    assert tool_specs(copy.deepcopy(tools)) == first and tool_specs(tools[:10]) == first[:10]
    assert len(checks) == 30
    assert len(tool_specs(_tools(31))) == 31 and len(checks) == 31  # a new schema is checked


def test_a_bad_schema_is_refused_every_time():
    bad = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                          "properties": {"a": {"type": 5}}}}}]
    for _ in range(2):
        with pytest.raises(InvalidRequest, match="is not a valid JSON Schema"):
            tool_specs(bad)


def test_a_large_schema_is_checked_without_being_kept(monkeypatch):
    tool_schema._checked.cache_clear()
    big = {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 100} for i in range(200)}}
    tool_specs([{"type": "function", "function": {"name": "big", "parameters": big}}])
    assert tool_schema._checked.cache_info().currsize == 0
