"""OpenAI's `encoding_format: "base64"` for embeddings: each vector as the base64 of its little-endian float32
bytes, which the openai SDK decodes (numpy.frombuffer(..., "<f4")) and which it asks for by default."""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Iterable

ENCODING_FORMATS = ("float", "base64")


def float32_base64(values: Iterable[float]) -> str:
    floats = array("f", values)
    if sys.byteorder == "big":
        floats.byteswap()
    return base64.b64encode(floats.tobytes()).decode("ascii")
