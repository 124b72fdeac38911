"""cursor_page.page_args: OpenAI's `limit` and `order` of a list request."""

from __future__ import annotations

import pytest

from velollm.api.cursor_page import page_args
from velollm.wire.errors import APIError


def test_defaults_and_good_values():
    assert page_args({}, "asc") == (20, "asc")
    assert page_args({}, "desc") == (20, "desc")
    assert page_args({"limit": "1", "order": "desc"}, "asc") == (1, "desc")
    assert page_args({"limit": "100"}, "asc") == (100, "asc")
    assert page_args({"limit": "007"}, "asc") == (7, "asc")


@pytest.mark.parametrize("limit", ["0", "101", "-1", "", "abc", "5_0", " 3", "3 ", "+3", "\u0663", "\uff13", "1.0",
                                   "1e1", "9" * 5000, "\x00"])
def test_a_limit_that_is_not_1_to_100_in_ascii_digits_is_a_400(limit):
    with pytest.raises(APIError) as caught:
        page_args({"limit": limit}, "asc")
    assert caught.value.status == 400 and caught.value.param == "limit"


@pytest.mark.parametrize("order", ["", "ASC", "random", "desc\x00"])
def test_an_order_other_than_asc_or_desc_is_a_400(order):
    with pytest.raises(APIError) as caught:
        page_args({"order": order}, "asc")
    assert caught.value.status == 400 and caught.value.param == "order"
