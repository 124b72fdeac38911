"""The numeric fields of an OpenAI request read for an Ollama upstream: the native route's types, its 400s."""

from __future__ import annotations

import pytest

from velollm.errors import InvalidRequest
from velollm.proxy.openai_numbers import OLLAMA_LIMIT_MAX, max_tokens_field, sampling_number


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


_NOT_NUMBERS = [float("inf"), float("-inf"), float("nan"), 10**400, -(10**400), True, "7", None]
_CASES = [(key, value) for key in ("temperature", "top_p", "min_p", "frequency_penalty", "presence_penalty",
                                   "repetition_penalty", "seed", "top_k", "max_tokens", "max_completion_tokens")
          for value in _NOT_NUMBERS if (key, value) != ("top_k", -(10**400))] + [
    ("seed", 1.5), ("top_k", 2.5), ("max_tokens", 1.5), ("seed", 2**64), ("seed", -(2**63) - 1),
    ("max_tokens", 0), ("max_completion_tokens", -1)]


@pytest.mark.parametrize("key, value", _CASES, ids=lambda v: repr(v)[:12])
def test_the_native_routes_400_in_the_same_words(key, value):
    """Each reader is the native route's (request_fields.Fields): non-finite numbers were an OverflowError or a
    ValueError out of int(), integers past float64 (10**400) went to Ollama as they came, and True was 'got True'.
    (SamplingParams' ranges, top_p 1.5 or top_k -5, are the native engine's: Ollama takes those as it likes.)"""
    from velollm.api.protocol_openai import parse_chat_request

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], key: value}
    read = (lambda: max_tokens_field(body)) if key.startswith("max_") else (lambda: sampling_number(body, key))
    try:
        parse_chat_request(body)
    except InvalidRequest as native:
        with pytest.raises(InvalidRequest) as err:
            read()
        assert (str(err.value), err.value.param) == (str(native), native.param)
    else:  # None is no field; top_k 10**400 is no top-k at all: taken natively, so taken here too
        assert value is None or read() == OLLAMA_LIMIT_MAX


def test_non_finite_max_tokens_is_a_400_naming_the_field():
    for key in ("max_tokens", "max_completion_tokens"):
        for value in (float("inf"), float("-inf"), float("nan")):
            with pytest.raises(InvalidRequest) as err:
                max_tokens_field({key: value})
            assert err.value.param == key and "must be a finite number" in str(err.value)


def test_limits_past_any_context_reach_ollama_as_numbers_it_decodes():
    assert max_tokens_field({"max_tokens": 10**400}) == OLLAMA_LIMIT_MAX
    assert max_tokens_field({"max_completion_tokens": 1e300}) == OLLAMA_LIMIT_MAX
    assert max_tokens_field({"max_tokens": 2**31}) == OLLAMA_LIMIT_MAX == 2**31 - 1
    assert sampling_number({"top_k": 10**400}, "top_k") == OLLAMA_LIMIT_MAX
    assert sampling_number({"top_k": -(10**400)}, "top_k") == -1  # off, as Ollama reads any top_k below 1
    assert sampling_number({"seed": 2**64 - 1}, "seed") == 2**64 - 1  # the native route's 64 bits
    with pytest.raises(InvalidRequest, match="seed must be at most 18446744073709551615"):
        sampling_number({"seed": 2**64}, "seed")
    with pytest.raises(InvalidRequest, match="temperature must be a finite number, got an integer beyond"):
        sampling_number({"temperature": 10**400}, "temperature")
