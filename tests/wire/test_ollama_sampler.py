"""clamp_option: Ollama's sampler's ranges (sample.NewSampler) for what it clamps, and nothing else touched."""

from __future__ import annotations

import math

import pytest

from velollm.wire.ollama_sampler import TOP_P_FLOOR, clamp_option


@pytest.mark.parametrize("name, value, expected", [
    ("temperature", -1, 0.0), ("temperature", 0.7, 0.7), ("temperature", 50, 50),
    ("top_p", 0, TOP_P_FLOOR), ("top_p", -2.5, TOP_P_FLOOR), ("top_p", 0.9, 0.9), ("top_p", 7, 1.0),
    ("min_p", -0.1, 0.0), ("min_p", 0.05, 0.05), ("min_p", 2, 1.0),
    ("top_k", -5, -5), ("repeat_penalty", -3.0, -3.0),  # not clamped by Ollama's sampler: the caller's checks
])
def test_the_ranges_ollamas_sampler_clamps_to(name, value, expected):
    assert clamp_option(name, value) == expected


@pytest.mark.parametrize("value", ["hot", None, True, math.inf, -math.inf])
def test_what_is_no_finite_number_is_left_for_the_callers_400(value):
    assert clamp_option("temperature", value) is value
    assert math.isnan(clamp_option("top_p", math.nan))
