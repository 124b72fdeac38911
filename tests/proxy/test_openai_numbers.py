"""The numeric fields of an OpenAI request read for an Ollama upstream: the native route's types, its 400s."""

from __future__ import annotations

import pytest

from velollm.errors import InvalidRequest
from velollm.proxy.openai_numbers import max_tokens_field, sampling_number


def test_numbers_pass_as_sent_and_integer_floats_become_integers():
    assert sampling_number({"temperature": 0.5}, "temperature") == 0.5
    assert sampling_number({"temperature": 1}, "temperature") == 1
    assert sampling_number({"seed": 2.0}, "seed") == 2 and isinstance(sampling_number({"seed": 2.0}, "seed"), int)
    assert sampling_number({"top_k": 40}, "top_k") == 40


@pytest.mark.parametrize("body, key, message", [
    ({"temperature": "hot"}, "temperature", "temperature must be a number, got str"),
    ({"top_p": True}, "top_p", "top_p must be a number, got bool"),
    ({"seed": "7"}, "seed", "seed must be an integer, got str"),
    ({"top_k": 2.5}, "top_k", "top_k must be an integer, got 2.5"),
])
def test_wrong_types_are_400s_naming_the_field(body, key, message):
    with pytest.raises(InvalidRequest) as err:
        sampling_number(body, key)
    assert str(err.value) == message and err.value.param == key


def test_max_completion_tokens_wins_and_below_one_is_refused():
    assert max_tokens_field({}) is None
    assert max_tokens_field({"max_tokens": 8.0, "max_completion_tokens": 3}) == 3
    for body, key in (({"max_tokens": 0}, "max_tokens"), ({"max_completion_tokens": -1}, "max_completion_tokens")):
        with pytest.raises(InvalidRequest) as err:
            max_tokens_field(body)
        assert err.value.param == key and "at least 1" in str(err.value)
    with pytest.raises(InvalidRequest, match="max_tokens must be an integer"):
        max_tokens_field({"max_tokens": 1.5})
