"""RoutingPolicy: the [routing] table, its validation, and decisions (rules in order, kNN, default)."""

from __future__ import annotations

import pytest

from velollm.complexity.features import RequestFeatures, extract
from velollm.complexity.policy import KnnVote, RouteDecision, RoutingPolicy

TABLE = {
    "name": "auto",
    "default": "small",
    "rules": [
        {"name": "tools", "model": "big", "tools": True},
        {"name": "long", "model": "long-ctx", "min_tokens": 1000},
        {"name": "code", "model": "coder", "code": True},
        {"name": "math", "model": "big", "math": True, "max_turns": 3},
        {"name": "deep", "model": "big", "min_turns": 6},
        {"name": "json", "model": "big", "format": True},
        {"name": "think", "model": "big", "reasoning": True},
        {"name": "translate", "model": "big", "pattern": r"\btranslate\b"},
    ],
}


def _chat(*user: str, **extra) -> RequestFeatures:
    messages = []
    for text in user:
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]
    return extract({"messages": messages[:-1], **extra}, "/v1/chat/completions")


@pytest.fixture
def policy() -> RoutingPolicy:
    return RoutingPolicy.from_table(TABLE)


def test_the_table_reads_into_rules(policy):
    assert policy.name == "auto" and policy.default == "small"
    assert [r.name for r in policy.rules] == ["tools", "long", "code", "math", "deep", "json", "think", "translate"]
    assert policy.models == ("small", "big", "long-ctx", "coder")
    assert policy.rules[5].when.format == ("json", "json_schema")


@pytest.mark.parametrize("features,route,model", [
    (_chat("hello"), "default", "small"),
    (_chat("hello", tools=[{"type": "function"}]), "tools", "big"),
    (_chat("word " * 1200), "long", "long-ctx"),
    (_chat("```python\nprint(1)\n```\nwhy does this fail?"), "code", "coder"),
    (_chat(r"Compute $\int_0^1 x^2 dx$"), "math", "big"),
    (_chat(*["hi"] * 6), "deep", "big"),
    (_chat("hi", response_format={"type": "json_object"}), "json", "big"),
    (_chat("hi", reasoning_effort="high"), "think", "big"),
    (_chat("Please TRANSLATE this into French"), "translate", "big"),
])
def test_first_matching_rule_wins(policy, features, route, model):
    decision = policy.decide(features)
    assert (decision.route, decision.model) == (route, model)


def test_rules_are_ordered_and_every_condition_must_hold(policy):
    # tools come before code: a code question with tools goes to the tools rule
    assert policy.decide(_chat("def f(x):\n    return x", tools=[{"type": "function"}])).route == "tools"
    # math holds only up to 3 turns: a deep conversation about math goes to the next rule that holds
    deep_math = _chat(*[r"Compute $\frac{1}{2}$"] * 6)
    assert deep_math.math_score >= 2 and policy.decide(deep_math).route == "deep"


def test_reasons_say_what_matched(policy):
    d = policy.decide(_chat("word " * 1200))
    assert d.reason == f"tokens {d.reason.split()[1]} >= 1000" and int(d.reason.split()[1]) >= 1200
    assert "code score" in policy.decide(_chat("def f(x):\n    return x")).reason
    assert policy.decide(_chat("hi")).reason == "no rule matched"
    assert RouteDecision("big", "code", "naïve").header() == "code; model=big; na?ve"


def test_the_vote_decides_when_no_rule_matched(policy):
    vote = KnnVote(model="coder", share=0.75, num_voters=4, top_similarity=0.81)
    d = policy.decide(_chat("hi"), vote)
    assert (d.route, d.model) == ("knn", "coder")
    assert d.reason == "4 neighbours, 75% of the vote, top similarity 0.81"
    assert policy.decide(_chat("hi", tools=[{}]), vote).route == "tools"  # rules come first


def test_false_conditions_and_bounds():
    p = RoutingPolicy.from_table({"default": "a", "rules": [
        {"model": "b", "tools": False, "code": False, "max_chars": 10, "format": "text"}]})
    assert p.name == "auto" and p.rules[0].name == "rule0"
    assert p.decide(_chat("short")).model == "b"
    assert "no tools, no code" in p.decide(_chat("short")).reason
    assert p.decide(_chat("short", tools=[{}])).model == "a"
    assert p.decide(_chat("a longer text")).model == "a"
    assert p.decide(_chat("short", response_format={"type": "json_object"})).model == "a"


def test_knn_table():
    p = RoutingPolicy.from_table({"default": "a", "knn": {"k": 3, "min_similarity": 0.5, "examples": [
        {"text": "prove it", "model": "b"}, {"text": "hi", "model": "a"}]}})
    assert p.knn is not None and p.knn.k == 3 and p.knn.min_similarity == 0.5 and p.knn.embedding_model is None
    assert p.models == ("a", "b")


@pytest.mark.parametrize("table,message", [
    ({}, "routing.default must be a non-empty string"),
    ({"default": "a", "nmae": "x"}, "routing: unknown key(s) ['nmae']"),
    ({"default": "a", "rules": {"model": "b"}}, "routing.rules must be an array"),
    ({"default": "a", "rules": [{"model": "b", "min_tokens": -1}]}, "routing.rules[0].min_tokens must be an integer"),
    ({"default": "a", "rules": [{"model": "b", "min_tokens": True}]}, "routing.rules[0].min_tokens"),
    ({"default": "a", "rules": [{"model": "b", "code": "yes"}]}, "routing.rules[0].code must be true or false"),
    ({"default": "a", "rules": [{"model": "b", "format": "xml"}]}, "routing.rules[0].format must be"),
    ({"default": "a", "rules": [{"model": "b", "pattern": "("}]}, "routing.rules[0].pattern is not a valid"),
    ({"default": "a", "rules": [{"model": "b", "lenght": 3}]}, "routing.rules[0]: unknown key(s) ['lenght']"),
    ({"default": "a", "rules": [{"code": True}]}, "routing.rules[0].model must be a non-empty string"),
    ({"default": "a", "rules": [{"model": "b", "name": "x"}, {"model": "c", "name": "x"}]}, "rule names must be unique"),
    ({"default": "a", "rules": [{"model": "b", "name": "knn"}]}, "reserved route names"),
    ({"default": "auto"}, "cannot also be a target"),
    ({"default": "a", "knn": {"examples": []}}, "routing.knn needs examples"),
    ({"default": "a", "knn": {"examples_file": "/nonexistent/x.jsonl"}}, "examples_file '/nonexistent/x.jsonl' cannot"),
    ({"default": "a", "knn": {"examples": [{"text": "x"}]}}, "routing.knn.examples[0].model"),
    ({"default": "a", "knn": {"k": 0, "examples": [{"text": "x", "model": "a"}]}}, "routing.knn.k must be >= 1"),
    ({"default": "a", "knn": {"min_similarity": 2, "examples": [{"text": "x", "model": "a"}]}}, "min_similarity"),
    ({"default": "a", "knn": "yes"}, "routing.knn must be a table"),
])
def test_bad_tables_name_the_key(table, message):
    with pytest.raises(ValueError) as info:
        RoutingPolicy.from_table(table)
    assert message in str(info.value)


def test_examples_file_adds_to_the_inline_examples(tmp_path):
    (tmp_path / "ex.jsonl").write_text('{"text": "prove it", "model": "b"}\n\n{"text": "hi", "model": "c"}\n')
    p = RoutingPolicy.from_table({"default": "a", "knn": {"examples_file": "ex.jsonl",
                                                          "examples": [{"text": "x", "model": "a"}]}}, tmp_path)
    assert [(e.text, e.model) for e in p.knn.examples] == [("x", "a"), ("prove it", "b"), ("hi", "c")]
    (tmp_path / "bad.jsonl").write_text('{"text": "ok", "model": "b"}\n{"text": "no model"}\n')
    with pytest.raises(ValueError, match="examples_file bad.jsonl line 2.model must be a non-empty string"):
        RoutingPolicy.from_table({"default": "a", "knn": {"examples_file": str(tmp_path / "bad.jsonl")}})
    (tmp_path / "broken.jsonl").write_text('{"text": \n')
    with pytest.raises(ValueError, match="broken.jsonl line 1: not JSON"):
        RoutingPolicy.from_table({"default": "a", "knn": {"examples_file": "broken.jsonl"}}, tmp_path)
