"""wire/go_format prints what the Go template package prints: the layer rule (wire imports nothing of velollm)
keeps two copies of strconv's FormatFloat('g', -1, 64) and Quote; this holds them together."""

from __future__ import annotations

import math
import random
import struct
import sys

from velollm.engine.text.go_template.printf import quote
from velollm.engine.text.go_template.values import go_float
from velollm.wire.go_format import go_float as wire_go_float
from velollm.wire.go_format import go_quote


def _floats() -> list[float]:
    rng = random.Random(0)
    edges = [0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, -5e-324, 2.2250738585072014e-308, sys.float_info.max,
             -sys.float_info.max, 1.0, -1.0, 0.1, 0.2 + 0.1, 1 / 3, 2**53, 2**53 + 2.0, 2**63, 1e21, 1e-7]
    for e in range(-30, 30):  # both sides of every power of ten, where the %e / %f switch and the digits change
        p = 10.0**e
        edges += [p, -p, math.nextafter(p, 0), math.nextafter(p, math.inf), p * 1.5, p * 9.999999]
    bits = [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(20_000)]
    decimals = [round(rng.uniform(-1, 1) * 10.0 ** rng.randint(-8, 8), rng.randint(0, 12)) for _ in range(20_000)]
    return edges + bits + decimals


def test_go_float_is_the_template_packages():
    diff = [(x, wire_go_float(x), go_float(x, "g")) for x in _floats() if wire_go_float(x) != go_float(x, "g")]
    assert not diff, diff[:10]


def test_go_quote_is_the_template_packages_for_every_code_point():
    """Each code point (every Unicode category, surrogates included), and the escapes among their neighbours."""
    step = 4096
    for start in range(0, sys.maxunicode + 1, step):
        text = "".join(map(chr, range(start, min(start + step, sys.maxunicode + 1))))
        assert go_quote(text) == quote(text), hex(start)
    mixed = 'a\a\b\f\n\r\t\v\\"\x00\x7f\x80\u00a0\u200b\u2028\ud800\U0001f600\U000e0001\U0010ffff'
    assert go_quote(mixed) == quote(mixed)
