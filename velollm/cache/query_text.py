"""QueryText: one question taken apart for the verifier: tokens, stems, numbers, named things, negations."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import cached_property, lru_cache

from velollm.cache.lexicon import (
    CLOSED_CLASS,
    CONTRACTIONS,
    NEGATIONS,
    ORDINALS,
    QUANTITY_CUES,
    SCALES,
    STOPWORDS,
    UNIT_NAMES,
    UNIT_ONLY_AFTER_NUMBER,
    UNITS,
)

_TOKEN = re.compile(r"[A-Za-z]+\+\+|[A-Za-z]#|->|→|=>|\d+(?:[.,:/]\d+)*%?|[A-Za-z0-9]+(?:[.\-_/'][A-Za-z0-9]+)*")
_ORDINAL_SUFFIXES = frozenset({"st", "nd", "rd", "th"})  # "3rd" is tokenized "3", "rd"
_QUOTED = re.compile(r"[\"“”«»`]([^\"“”«»`]{1,80})[\"“”«»`]|(?<![A-Za-z])'([^']{1,80})'(?![A-Za-z])")
_SENTENCE_END = re.compile(r"[.!?:;]\s+|\n")
# Compiled once: a lookup parses its question on the semantic hit path, where re's own cache lookups
# for ~75 pattern uses per question cost more than the matching.
_CONTRACTIONS = [(re.compile(re.escape(short) + r"\b", re.IGNORECASE), long)
                 for short, long in CONTRACTIONS.items()]
_POSSESSIVE = re.compile(r"(\w)'s\b")
_PLAIN_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_GROUPED_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DOTTED_NUMBER = re.compile(r"\d+(?:[:/.,]\d+)+")
_CODE_MARK = re.compile(r"[.\-_/+#]")


def stem(word: str) -> str:
    """A light suffix stripper (plural, -ing, -ed, -ly, final e), the same on both sides of a comparison."""
    w = word.lower().replace("'", "")
    if len(w) <= 3 or not w.isalpha():
        return w
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("ly", ""), ("es", "e"),
                         ("s", "")):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3 and not w.endswith(("ss", "us", "is")):
            w = w[: len(w) - len(suffix)] + repl
            break
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiouls":
        w = w[:-1]  # running -> runn -> run
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w


def _expand(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).replace("’", "'")
    out = text
    for pattern, long in _CONTRACTIONS:
        out = pattern.sub(long, out)
    return _POSSESSIVE.sub(r"\1", out)  # possessive / "is": the noun or question word remains


def _number(token: str) -> float | None:
    """The value of a written number ("5", "3.5", "1,000", "15%"); None for anything else."""
    t = token.rstrip("%")
    if _PLAIN_NUMBER.fullmatch(t):
        return float(t)
    if _GROUPED_NUMBER.fullmatch(t):
        return float(t.replace(",", ""))
    return None


def _fmt(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


@dataclass(frozen=True)
class Token:
    text: str  # as written (contractions expanded)
    lower: str
    stem: str
    sentence_start: bool


MEMO_MAX_CHARS = 2048


class QueryText:
    """Features of one question, computed on first use. `QueryText.of(text)` keeps them for a cached
    question, which is compared again at every lookup it is a candidate for."""

    @staticmethod
    def of(text: str) -> QueryText:
        # Only short texts are kept: the semantic tier takes questions of few words, but a word may be
        # megabytes long, and 4,096 of those would be held for good.
        return _memoised(text) if len(text) <= MEMO_MAX_CHARS else QueryText(text)

    def __init__(self, text: str) -> None:
        self.text = text
        self.expanded = _expand(text)

    @cached_property
    def tokens(self) -> list[Token]:
        out: list[Token] = []
        starts = {0} | {m.end() for m in _SENTENCE_END.finditer(self.expanded)}
        for m in _TOKEN.finditer(self.expanded):
            raw = m.group(0).strip("'")
            if not raw:
                continue
            at_start = any(m.start() == s or self.expanded[s:m.start()].strip(" \"'(*-#>") == "" for s in starts
                           if s <= m.start())
            out.append(Token(raw, raw.lower(), stem(raw), at_start))
        return out

    @cached_property
    def words(self) -> list[str]:
        return [t.lower for t in self.tokens]

    @cached_property
    def stems(self) -> frozenset[str]:
        return frozenset(t.stem for t in self.tokens) | frozenset(self.words)

    @cached_property
    def content(self) -> frozenset[str]:
        """Stems of the words that carry the question (function words and numbers left out)."""
        return frozenset(t.stem for t in self.tokens if t.lower not in STOPWORDS and t.stem not in STOPWORDS
                         and _number(t.lower) is None and t.lower not in UNITS)

    @cached_property
    def negations(self) -> int:
        return sum(1 for w in self.words if w in NEGATIONS)

    @cached_property
    def numbers(self) -> Counter[str]:
        """Every quantity, as a canonical string: 5 / five, 1,000 / 1k / one thousand, 3rd / third, 15%."""
        out: Counter[str] = Counter()
        words = self.words
        i = 0
        while i < len(words):
            w = words[i]
            value = _number(w)
            if _DOTTED_NUMBER.fullmatch(w) and value is None:  # 9/11, 3:30, 1.2.3
                out[w] += 1
            elif value is not None and i + 1 < len(words) and words[i + 1] in _ORDINAL_SUFFIXES:
                out[f"#{_fmt(value)}"] += 1
                i += 2
                continue
            elif w in ORDINALS:
                out[f"#{ORDINALS[w]}"] += 1
            elif value is not None or w in UNITS:
                total, current = 0.0, value if value is not None else float(UNITS[w])
                j = i + 1
                while j < len(words) and (words[j] in UNITS or words[j] in SCALES or words[j] == "and"):
                    nxt = words[j]
                    if nxt in SCALES and SCALES[nxt] < 1000:
                        current *= SCALES[nxt]
                    elif nxt in SCALES:  # "two thousand three hundred": close the thousands group
                        total, current = total + current * SCALES[nxt], 0.0
                    elif nxt in UNITS and value is None:
                        current += UNITS[nxt]
                    elif nxt != "and":
                        break
                    j += 1
                suffix = "%" if w.endswith("%") or (j < len(words) and words[j] in ("percent", "pct")) else ""
                out[_fmt(total + current) + suffix] += 1
                i = j
                continue
            elif w in SCALES and w not in ("k", "m", "bn"):
                out[_fmt(float(SCALES[w]))] += 1
            i += 1
        return out

    @cached_property
    def terms(self) -> frozenset[str]:
        """Members of the closed classes (units, days, months, languages, colours, planets), canonical."""
        out = set()
        words = self.words
        quantitative = bool(self.numbers) or any(w in QUANTITY_CUES for w in words)
        for i, w in enumerate(words):
            canonical = CLOSED_CLASS.get(w) or (UNIT_NAMES.get(w) if quantitative else None)
            if canonical is None:
                continue
            if w in UNIT_ONLY_AFTER_NUMBER and not (i > 0 and _number(words[i - 1]) is not None):
                continue
            out.add(canonical)
        return frozenset(out)

    @cached_property
    def named(self) -> frozenset[str]:
        """Named things: capitalised words inside a sentence, acronyms, versions and code-like names
        (node.js, snake_case, c++), and quoted spans. Lower-cased; a possessive is already stripped."""
        out: set[str] = set()
        for t in self.tokens:
            raw = t.text
            if len(raw) < 2 and raw not in ("C", "R"):
                continue
            code_like = bool(_CODE_MARK.search(raw)) and any(c.isalpha() for c in raw)
            mixed = any(c.isdigit() for c in raw) and any(c.isalpha() for c in raw)
            camel = any(c.isupper() for c in raw[1:]) and any(c.islower() for c in raw)
            acronym = raw.isupper() and len(raw) >= 2 and raw.isalpha()
            proper = raw[0].isupper() and not t.sentence_start and raw.lower() not in ("i", "i'm")
            if code_like or mixed or camel or acronym or proper:
                out.add(t.lower)
        for m in _QUOTED.finditer(self.expanded):
            quoted = (m.group(1) or m.group(2) or "").strip().lower()
            if quoted:
                out.add(" ".join(quoted.split()))
        return frozenset(out)


_memoised = lru_cache(maxsize=4096)(QueryText)
