"""The verifier's guards, each on questions written for this test (not the benchmark's pairs)."""

from __future__ import annotations

import pytest

from velollm.cache.query_text import QueryText, stem
from velollm.cache.verifier import Verifier, opposite

V = Verifier()


@pytest.mark.parametrize("new, cached", [
    ("How do I peel a mango?", "What's the best way to peel a mango?"),
    ("Where is Machu Picchu located?", "Where can I find Machu Picchu?"),
    ("What is 3 + 4?", "what's 3+4?"),
    ("How can I fly from Lisbon to Oslo?", "How do I get to Oslo from Lisbon?"),
    ("How many miles is 10 km?", "Convert 10 km to miles."),
    ("Why doesn't my bike chain stay on?", "Why won't my bike chain stay on?"),
    ("Explain the offside rule in soccer.", "Can you explain soccer's offside rule?"),
    ("What's five plus seven?", "What is 5 plus 7?"),
    ("How many meters is 3 km?", "Convert 3 kilometres to metres."),
    ("How do I brew a cup of coffee?", "How do I brew coffee?"),  # a unit only counts in a quantity question
])
def test_same_question_passes(new, cached):
    assert V.check(new, cached).same, V.check(new, cached)


@pytest.mark.parametrize("new, cached, reason", [
    ("How many calories are in 3 bananas?", "How many calories are in 2 bananas?", "number"),
    ("What's 20% of 250?", "What's 25% of 250?", "number"),
    ("Who won the World Cup in 2010?", "Who won the World Cup in 2014?", "number"),
    ("What is five plus seven?", "What is five plus eight?", "number"),
    ("Is it the 2nd door on the left?", "Is it the 3rd door on the left?", "number"),
    ("Which vegetables are not safe for rabbits?", "Which vegetables are safe for rabbits?", "negation"),
    ("Why isn't the printer responding?", "Why is the printer responding?", "negation"),
    ("What is the capital of Slovakia?", "What is the capital of Slovenia?", "name"),
    ("How do I rename a file in PowerShell?", "How do I rename a file in Bash?", "name"),
    ("What does \"carpe diem\" mean?", "What does \"memento mori\" mean?", "name"),
    ("How do I enable two-factor login?", "How do I disable two-factor login?", "opposite"),
    ("How do I mount a USB drive?", "How do I unmount a USB drive?", "opposite"),
    ("Show the cheapest flights to Rome.", "Show the most expensive flights to Rome.", "opposite"),
    ("Is the file careful about locks?", "Is the file careless about locks?", "opposite"),
    ("Convert 12 inches to centimeters.", "Convert 12 centimeters to inches.", "direction"),
    ("Convert 3 liters to cups.", "Convert 3 liters to gallons.", "term"),
    ("How many grams are in an ounce?", "How many grams are in a pound?", "term"),
    ("translate good night into dutch", "translate good night into polish", "term"),
    ("What's on TV on saturday?", "What's on TV on sunday?", "term"),
    ("Will it rain tomorrow?", "Will it rain today?", "term"),
    ("Is a wolf heavier than a lynx?", "Is a lynx heavier than a wolf?", "direction"),
    ("How do I fly from Lisbon to Oslo?", "How do I fly from Oslo to Lisbon?", "direction"),
])
def test_near_miss_is_rejected_by_its_guard(new, cached, reason):
    verdict = V.check(new, cached)
    assert not verdict.same and verdict.reason == reason, verdict


def test_opposites_by_prefix_and_list():
    assert opposite("encrypt", "decrypt") and opposite("import", "export") and opposite("upload", "download")
    assert opposite("valid", "invalid") and opposite("first", "last") and opposite("stop", "start")
    assert not opposite("install", "configure") and not opposite("able", "table")


def test_query_text_features():
    q = QueryText("Who's Node.js's author, and what's the 1,000th prime? It isn't \"hard\".")
    assert q.numbers["#1000"] == 1 and q.negations == 1
    assert {"node.js", "hard"} <= q.named
    assert "who" not in q.named  # a sentence-initial capital is not a name
    assert stem("running") == stem("run") and stem("cities") == stem("city") and stem("lists") == stem("list")


def test_only_short_question_texts_are_kept():
    """A question of few words may still be megabytes long (one word): such texts are not memoised."""
    from velollm.cache.query_text import MEMO_MAX_CHARS, QueryText, _memoised

    assert QueryText.of("what is the capital of France") is QueryText.of("what is the capital of France")
    before = _memoised.cache_info().currsize
    huge = "x" * (MEMO_MAX_CHARS + 1)
    assert QueryText.of(huge) is not QueryText.of(huge) and QueryText.of(huge).text == huge
    assert _memoised.cache_info().currsize == before
