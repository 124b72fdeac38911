"""The Go template interpreter against Go's own output (tests/fixtures/go_template/goldens.json, printed by
render.go with Go's text/template and Ollama's Execute semantics): byte-for-byte equal, errors where Go errs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from velollm.engine.text.go_template import GoTemplateError, execute, parse
from velollm.engine.text.go_template.builtins import NAMES
from velollm.engine.text.go_template.executor import MAX_TEMPLATE_DEPTH
from velollm.engine.text.go_template.ollama import FUNCS, Think, parse_template, render
from velollm.engine.text.go_template.ollama_values import go_number

FIXTURES = Path(__file__).parents[1] / "fixtures" / "go_template"
CASES = {c["name"]: c for c in json.loads((FIXTURES / "cases.json").read_text())}
GOLDENS = {g["name"]: g for g in json.loads((FIXTURES / "goldens.json").read_text())}


def _render(case: dict[str, Any]) -> str:
    if "data" in case:
        parsed = parse(case["template"], NAMES | set(FUNCS))
        return execute(parsed.root, go_number(case["data"]), FUNCS, parsed.trees, case["template"])
    think = Think(bool(case["think"]), case.get("think_level", ""), True) if "think" in case else Think()
    return render(parse_template(case["template"]), case["messages"], case.get("tools"), think)


def test_every_case_has_a_golden() -> None:
    assert set(CASES) == set(GOLDENS)
    assert len(CASES) > 100


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_go(name: str) -> None:
    golden = GOLDENS[name]
    if golden.get("error"):
        with pytest.raises(GoTemplateError) as e:
            _render(CASES[name])
        # Go's text word for word, exec errors with their `template: :line:col: executing "name" at <node>:`
        # prefix (the column in bytes). A value read from a map is Go's `interface {}` where this names its
        # dynamic type; templates calling templates stop at VeloLLM's depth, Go's 100000 being past Python's stack.
        expected = golden["output"].replace("(100000)", f"({MAX_TEMPLATE_DEPTH})")
        if name == "lang/err-field-on-string":
            expected = expected.replace("in type interface {}", "in type string")
        assert str(e.value) == expected
        return
    assert _render(CASES[name]) == golden["output"]
