"""Token estimate and the code / math scores."""

from __future__ import annotations

from velollm.complexity.signals import (CODE_THRESHOLD, COUNT_CHARS, MATH_THRESHOLD, code_score, estimate_tokens,
                                        math_score)


def test_tokens_count_words_and_punctuation():
    assert estimate_tokens("") == 0
    assert estimate_tokens("Hello, world!") == 4
    assert estimate_tokens("def f(x): return x") == 8


def test_tokens_of_a_huge_text_are_extrapolated_from_a_sample():
    num_words = COUNT_CHARS // 5 * 4  # 4x the counted window
    assert abs(estimate_tokens("word " * num_words) - num_words) <= 4  # the sample ends inside a word


def test_code_is_found_in_fences_syntax_and_words():
    assert code_score("```python\nprint(1)\n```") >= 3
    assert code_score("def area(r):\n    return 3.14 * r * r") >= CODE_THRESHOLD
    assert code_score("for (int i = 0; i < n; i++) {\n  sum += a[i];\n}") >= CODE_THRESHOLD
    assert code_score("SELECT name FROM users WHERE id = 3") >= CODE_THRESHOLD
    assert code_score("Write a Python function that reverses a list") >= CODE_THRESHOLD


def test_prose_is_not_code():
    for text in ("What is the capital of France?", "Tell me a story about a dragon and a knight.",
                 "Summarize the meeting notes from 2024-05-01 in three bullet points."):
        assert code_score(text) < CODE_THRESHOLD, text


def test_math_is_found_in_latex_arithmetic_and_words():
    assert math_score(r"Compute $\int_0^1 x^2 dx$") >= MATH_THRESHOLD
    assert math_score("Solve the equation 3x + 5 = 20") >= MATH_THRESHOLD
    assert math_score("Prove that there are infinitely many primes; use a proof by contradiction") >= MATH_THRESHOLD
    assert math_score("What is the probability of two sixes with two dice?") >= MATH_THRESHOLD


def test_prose_and_dates_are_not_math():
    for text in ("What is the capital of France?", "The meeting is on 2024-05-01 at room 12/3.",
                 "Write a haiku about autumn leaves."):
        assert math_score(text) < MATH_THRESHOLD, text


def test_one_kind_of_signal_is_capped():
    assert code_score("a;\n" * 10_000) == 3
    assert math_score("1 + 1\n" * 10_000) == 3
