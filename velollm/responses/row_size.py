"""The size of one stored row (a stored response, a stored chat completion) and the cap on it.

A row is measured as the store writes it: the JSON text of its columns (`json.dumps`, ASCII), so a base64
image in the input counts by its base64 characters and non-ASCII text by its escapes. The cap
(`--responses-max-row-size`) keeps one request from putting its whole body in the file; the count and age
limits (`--responses-max`, 30 days) bound how many rows there are, and `--responses-max-store-size` the file
they make together (store_size.py).
"""

from __future__ import annotations

import json
from typing import Any


class RowTooLarge(ValueError):
    """A row over the cap: not stored."""

    def __init__(self, num_bytes: int, max_bytes: int) -> None:
        super().__init__(f"{num_bytes} bytes as stored, over the cap of {max_bytes} bytes a row")
        self.num_bytes, self.max_bytes = num_bytes, max_bytes


def stored_bytes(*values: Any) -> int:
    """The bytes `values` take as stored: each one's JSON text."""
    return sum(len(json.dumps(v)) for v in values)


def check_row(num_bytes: int, max_bytes: int) -> None:
    if num_bytes > max_bytes:
        raise RowTooLarge(num_bytes, max_bytes)
