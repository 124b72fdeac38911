"""Verifier: the semantic tier's second stage. Given a new question and the cached question nearest to
it by meaning (same context), decides whether they ask the same thing.

Sentence embeddings put near-misses close together: "capital of Australia / Austria", "5 km to miles /
5 miles to km", "enable / disable dark mode" score 0.9-0.99, above many true paraphrases. What differs in
those pairs is small and checkable: a quantity, a name, an opposite, a negation, or which side of a
directional word something stands on. Each guard below rejects on one of those; a pair that passes them
all still needs the embedding similarity over the threshold (see calibration.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from velollm.cache.lexicon import DIRECTION_WORDS, OPPOSITES, POLAR_PREFIXES, POLAR_SUFFIXES, STOPWORDS
from velollm.cache.query_text import QueryText, stem

_OPPOSITE_PAIRS = frozenset({(a, b) for a, b in OPPOSITES} | {(b, a) for a, b in OPPOSITES}
                            | {(stem(a), stem(b)) for a, b in OPPOSITES} | {(stem(b), stem(a)) for a, b in OPPOSITES})
_ROLE_WINDOW = 3  # tokens a directional word may stand before the thing it marks ("to a new Word file")
_MIN_BASE = 4  # shortest shared word part for the prefix rule (enable/dis-able, un-lock)


@dataclass(frozen=True)
class Verdict:
    same: bool
    reason: str  # "ok" or the guard that rejected: number, negation, term, name, opposite, direction


def opposite(x: str, y: str) -> bool:
    """Listed opposites, or one word with an opposing prefix/suffix (enable/disable, import/export)."""
    if (x, y) in _OPPOSITE_PAIRS or (stem(x), stem(y)) in _OPPOSITE_PAIRS:
        return True
    for p1 in POLAR_PREFIXES:
        if not x.startswith(p1):
            continue
        base = x[len(p1):]
        if len(base) < _MIN_BASE:
            continue
        for p2 in POLAR_PREFIXES:
            if p2 != p1 and y == p2 + base:
                return True
    for s1, s2 in POLAR_SUFFIXES:
        for a, b in ((x, y), (y, x)):
            if a.endswith(s1) and b.endswith(s2) and a[: -len(s1)] == b[: -len(s2)] and len(a) > len(s1) + 2:
                return True
    return False


def _present(name: str, other: QueryText) -> bool:
    if " " in name:
        return name in " ".join(other.words) or name in other.expanded.lower()
    return name in other.words or stem(name) in other.stems


def _anchors(a: QueryText, b: QueryText) -> dict[str, tuple[int, int]]:
    """Words standing once in each question that carry content: word -> (position in a, position in b)."""
    def positions(q: QueryText) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i, t in enumerate(q.tokens):
            if t.lower not in STOPWORDS and t.lower not in DIRECTION_WORDS:
                out.setdefault(t.stem, []).append(i)
        return out

    pa, pb = positions(a), positions(b)
    return {w: (pa[w][0], pb[w][0]) for w in pa.keys() & pb.keys() if len(pa[w]) == 1 and len(pb[w]) == 1}


def _role(q: QueryText, i: int) -> str | None:
    """The directional word marking the token at i ("from" in "from Boston"), if one stands just before."""
    for j in range(i - 1, max(-1, i - 1 - _ROLE_WINDOW), -1):
        w = q.tokens[j].lower
        if w in DIRECTION_WORDS:
            return w
    return None


def _between(q: QueryText, i: int, j: int) -> bool:
    lo, hi = min(i, j), max(i, j)
    return any(t.lower in DIRECTION_WORDS for t in q.tokens[lo + 1:hi])


class Verifier:
    def check(self, new: str | QueryText, cached: str | QueryText) -> Verdict:
        a = new if isinstance(new, QueryText) else QueryText(new)
        b = cached if isinstance(cached, QueryText) else QueryText.of(cached)
        for reason, guard in (("number", self._numbers), ("negation", self._negations), ("term", self._terms),
                              ("name", self._names),
                              ("opposite", self._opposites), ("direction", self._direction)):
            if not guard(a, b):
                return Verdict(False, reason)
        return Verdict(True, "ok")

    @staticmethod
    def _numbers(a: QueryText, b: QueryText) -> bool:
        return a.numbers == b.numbers

    @staticmethod
    def _negations(a: QueryText, b: QueryText) -> bool:
        return a.negations == b.negations

    @staticmethod
    def _terms(a: QueryText, b: QueryText) -> bool:
        return a.terms == b.terms

    @staticmethod
    def _names(a: QueryText, b: QueryText) -> bool:
        return all(_present(n, b) for n in a.named) and all(_present(n, a) for n in b.named)

    @staticmethod
    def _opposites(a: QueryText, b: QueryText) -> bool:
        only_a = {w for w in a.words if w not in b.words and stem(w) not in b.stems}
        only_b = {w for w in b.words if w not in a.words and stem(w) not in a.stems}
        return not any(opposite(x, y) for x in only_a for y in only_b)

    @staticmethod
    def _direction(a: QueryText, b: QueryText) -> bool:
        """Two shared things swapped across a directional word, with a marker moving from one to the
        other ("5 km to miles" != "5 miles to km"; "from Boston to Denver" = "to Denver from Boston")."""
        anchors = _anchors(a, b)
        words = list(anchors)
        for i, x in enumerate(words):
            for y in words[i + 1:]:
                (ax, bx), (ay, by) = anchors[x], anchors[y]
                if (ax < ay) == (bx < by) or not (_between(a, ax, ay) and _between(b, bx, by)):
                    continue
                ra_x, ra_y, rb_x, rb_y = _role(a, ax), _role(a, ay), _role(b, bx), _role(b, by)
                if (ra_x is not None and ra_x == rb_y and ra_x != rb_x) or \
                        (ra_y is not None and ra_y == rb_x and ra_y != rb_y):
                    return False
        return True
