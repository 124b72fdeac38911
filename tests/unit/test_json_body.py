"""velollm/wire/json_body.py: what client JSON may hold, with the field named when it may not."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velollm.errors import InvalidRequest
from velollm.wire.json_body import MAX_JSON_DEPTH, check_json, parse_json

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text().filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(_json_values)
def test_ordinary_json_reads_as_json_does(value):
    text = json.dumps({"v": value})
    assert parse_json(text) == json.loads(text)


def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_depth_bound_is_exact_and_names_the_field():
    parse_json('{"a": ' + _nested(MAX_JSON_DEPTH - 1) + "}")
    for levels in (MAX_JSON_DEPTH, 1000, 200_000):
        with pytest.raises(InvalidRequest, match="nested more than 64 levels") as err:
            parse_json('{"tools": [{"x": ' + _nested(levels) + "}]}")
        assert err.value.param == "tools"
    with pytest.raises(InvalidRequest) as err:
        parse_json(_nested(100))
    assert err.value.param is None


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
def test_non_finite_numbers_name_their_field(literal):
    with pytest.raises(InvalidRequest, match="finite number") as err:
        parse_json('{"options": {"temperature": ' + literal + "}}")
    assert err.value.param == "options.temperature"
    with pytest.raises(InvalidRequest) as err:
        parse_json('{"stop_token_ids": [1, ' + literal + "]}")
    assert err.value.param == "stop_token_ids[1]"


def test_lone_surrogates_in_values_and_keys():
    with pytest.raises(InvalidRequest, match="lone surrogate") as err:
        parse_json('{"messages": [{"content": "a\\ud800b"}]}')
    assert err.value.param == "messages[0].content"
    with pytest.raises(InvalidRequest, match="keys"):
        parse_json('{"\\udfff": 1}')
    assert parse_json('{"emoji": "\\ud83d\\ude00"}') == {"emoji": "\U0001F600"}  # a pair is one character


def test_not_json_and_huge_integers_are_400s():
    for text in ("{", b"\xff\xfe", "1" * 5000):
        with pytest.raises(InvalidRequest, match="invalid JSON"):
            parse_json(text)


def test_check_json_walks_parsed_values():
    check_json({"a": [1.5, "x", {"b": None}]})
    with pytest.raises(InvalidRequest):
        check_json({"a": [float("nan")]})
