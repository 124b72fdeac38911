"""The query of OpenAI's list routes (stored chat completions, their messages, a response's input items):
`limit` and `order`, checked as OpenAI checks them."""

from __future__ import annotations

from collections.abc import Mapping

from velollm.wire.errors import APIError

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def page_args(query: Mapping[str, str], default_order: str) -> tuple[int, str]:
    """`limit` (1-100, 20 by default) and `order` (asc or desc) of a list request; a 400 for any other.
    `limit` is ASCII digits only: Python's int() would also take `5_0`, ` 3`, `+5` or Arabic-Indic digits."""
    order = query.get("order", default_order)
    if order not in ("asc", "desc"):
        raise APIError(400, f"Invalid 'order': expected 'asc' or 'desc', got {order!r}", param="order")
    raw = query.get("limit")
    limit = DEFAULT_LIMIT if raw is None else int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 6 else 0
    if not 1 <= limit <= MAX_LIMIT:
        raise APIError(400, f"Invalid 'limit': expected an integer from 1 to {MAX_LIMIT}", param="limit")
    return limit, order
