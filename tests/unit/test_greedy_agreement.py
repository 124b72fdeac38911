"""tests/greedy_agreement.py: a divergence passes at a near tie of the reference only, and stops the comparison."""

from __future__ import annotations

import pytest

from tests.greedy_agreement import assert_greedy_agrees

REF = [5, 7, 9]
REF_LOGPROBS = [{5: -0.1, 6: -2.0}, {7: -0.6930, 8: -0.6935}, {9: -0.2, 1: -3.0}]


def test_equal_runs_agree_everywhere():
    assert assert_greedy_agrees(REF, REF_LOGPROBS, REF, REF_LOGPROBS) == 3


def test_a_swap_at_a_near_tie_stops_the_comparison():
    """Step 1's top two are 0.0005 nats apart: another summation order may pick 8, and what follows differs."""
    ours_logprobs = [{5: -0.1, 6: -2.0}, {8: -0.6931, 7: -0.6933}, {4: -0.5, 3: -1.0}]
    assert assert_greedy_agrees([5, 8, 4], ours_logprobs, REF, REF_LOGPROBS) == 1


def test_a_swap_beyond_the_tie_tolerance_fails():
    with pytest.raises(AssertionError, match="step 0: we chose 6, the reference 5"):
        assert_greedy_agrees([6, 7, 9], None, REF, REF_LOGPROBS)


def test_a_token_outside_the_reference_top_fails():
    with pytest.raises(AssertionError, match="step 2: we chose 4"):
        assert_greedy_agrees([5, 7, 4], None, REF, REF_LOGPROBS)


def test_logprobs_before_the_divergence_must_agree():
    ours_logprobs = [{5: -0.1 + 0.01, 6: -2.0}, *REF_LOGPROBS[1:]]
    with pytest.raises(AssertionError, match="step 0: logprob"):
        assert_greedy_agrees(REF, ours_logprobs, REF, REF_LOGPROBS)
