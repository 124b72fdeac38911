"""Values as Go's fmt prints them (`%v`, `%#v`), where Ollama shows a model's JSON parameters to people."""

from __future__ import annotations

import json
import math
import struct
import sys
from decimal import Decimal
from typing import Any

_ESCAPES = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t", "\v": r"\v",
            "\\": "\\\\", '"': '\\"'}


def go_value(value: Any) -> str:
    """`fmt.Sprintf("%v", v)` of a value decoded from JSON by Go: every number is a float64."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and not -sys.float_info.max <= value <= sys.float_info.max:
        return str(value)  # no float64 holds it (a store written by another tool): its digits as stored
    if isinstance(value, (int, float)):
        return go_float(float(value))
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def go_syntax(value: Any) -> str:
    """`fmt.Sprintf("%#v", v)`: as %v but a string quoted as strconv.Quote quotes it."""
    return go_quote(value) if isinstance(value, str) else go_value(value)


def go_float(x: float, bits: int = 64) -> str:
    """strconv.FormatFloat(x, 'g', -1, bits): the shortest digits that read back as x (as a float32 with bits=32,
    Go's %v of a float32: 0.123456789 -> 0.12345679), in exponent form when the exponent is under -4 or at least 6
    (`1e+06`, `1.5e-05`, `123456`, `0.25`)."""
    if bits == 32 and math.isfinite(x):
        x = _float32(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x == 0:
        return "-0" if math.copysign(1, x) < 0 else "0"
    _, digits, exponent = Decimal(repr(x) if bits == 64 else _shortest32(x)).normalize().as_tuple()
    num_digits = len(digits)
    exp10 = num_digits + int(exponent) - 1
    if exp10 < -4 or exp10 >= 6:
        return f"{x:.{num_digits - 1}e}"
    return f"{x:.{max(num_digits - 1 - exp10, 0)}f}"


def _float32(x: float) -> float:
    """x rounded to the nearest float32 (beyond its range: infinity, as Go's float32(x))."""
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def _shortest32(x: float) -> str:
    """The fewest significant digits that read back as the float32 x, correctly rounded (so the nearest such)."""
    for digits in range(1, 10):  # 9 always do
        text = f"{x:.{digits - 1}e}"
        if _float32(float(text)) == x:
            return text
    return f"{x:.8e}"


def go_quote(text: str) -> str:
    """strconv.Quote: printable characters as they are, the rest escaped."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'
