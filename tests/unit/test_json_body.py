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


_hostile_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
    | st.sampled_from(["\ud800", "a\udfffb", "é\ud83d", "\U0001F600", "ok"]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=3) | st.just("\udc00"), children, max_size=3),
    max_leaves=12,
)


def _nest(value, levels: int):
    for i in range(levels):
        value = [value] if i % 2 else {"k": value}
    return value


@settings(max_examples=300, deadline=None)
@given(_hostile_values, st.sampled_from([0, 40, 62, 63, 64, 70]))
def test_fast_walk_judges_as_the_path_walk_does(value, levels):
    """check_json walks without paths first; what it raises must be what the path walk alone raises."""
    from velollm.wire.json_body import _raise_first_fault

    value = _nest(value, levels)
    try:
        _raise_first_fault(value, "")
        expected = None
    except InvalidRequest as exc:
        expected = (str(exc), exc.param)
    try:
        check_json(value)
        got = None
    except InvalidRequest as exc:
        got = (str(exc), exc.param)
    assert got == expected
