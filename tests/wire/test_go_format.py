"""velollm/wire/go_format.py against what Go's fmt prints for the same values (Go 1.22, by hand)."""

from __future__ import annotations

import pytest

from velollm.wire.go_format import go_float, go_quote, go_syntax, go_value


@pytest.mark.parametrize(("value", "expected"), [
    (0.0, "0"), (1.0, "1"), (0.25, "0.25"), (0.1, "0.1"), (123456.0, "123456"), (1e6, "1e+06"),
    (1234567.0, "1.234567e+06"), (0.0001, "0.0001"), (0.00001, "1e-05"), (1.5e-05, "1.5e-05"), (-2.5, "-2.5"),
    (4096.0, "4096"), (1e21, "1e+21"), (0.30000000000000004, "0.30000000000000004"), (float("inf"), "+Inf"),
])
def test_float(value, expected):
    assert go_float(value) == expected


def test_values():
    assert [go_value(v) for v in (True, False, 0, 40, 0.9, "a b", None)] == ["true", "false", "0", "40", "0.9",
                                                                          "a b", "null"]
    assert go_syntax("<|eot_id|>") == '"<|eot_id|>"' and go_syntax(1e6) == "1e+06" and go_syntax(False) == "false"


def test_quote():
    assert go_quote('é "x"\\') == '"é \\"x\\"\\\\"'
    assert go_quote("a\tb\nc\x01\u200b") == '"a\\tb\\nc\\x01\\u200b"'


# strconv.FormatFloat(float64(float32(x)) as float32, 'g', -1, 32), printed by Go 1.19 (fmt %v of a float32)
FLOAT32_BY_GO = {"0.123456789": "0.12345679", "0.7": "0.7", "1000000": "1e+06", "0.000015": "1.5e-05",
                 "1e-45": "1e-45", "3.4028235e38": "3.4028235e+38", "16777217": "1.6777216e+07", "0.1": "0.1",
                 "123456.7": "123456.7", "1234567.8": "1.2345678e+06", "-0.5": "-0.5", "2.5e-06": "2.5e-06",
                 "100": "100", "1e+30": "1e+30"}


def test_go_float_of_a_float32_as_go_prints_it():
    assert {text: go_float(float(text), 32) for text in FLOAT32_BY_GO} == FLOAT32_BY_GO
    assert go_float(0.123456789) == "0.123456789"  # float64 as before
    assert go_float(1e39, 32) == "+Inf" and go_float(-0.0, 32) == "-0"


def test_an_integer_no_float64_holds_prints_its_digits():
    """A params layer another tool wrote may hold 10**400 (json.loads gives an int): float() of it was an
    OverflowError, and every /api/show of the model a 500."""
    assert go_value(10**400) == "1" + "0" * 400
    assert go_value(-(10**400)) == "-1" + "0" * 400
    assert go_syntax(10**300) == go_float(1e300)
