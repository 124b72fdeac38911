"""The labeled evaluation set of benchmarks/cache.py (files in benchmarks/data/cache_pairs_*.tsv).

Every third pair of each file (index % 3 == 2) is held out: the verifier and the threshold were
designed looking at the other pairs only (the "dev" split), and the held-out figures show how the
rules carry over to questions they were not shaped on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Pair:
    kind: str  # paraphrase | number | entity | direction | negation | antonym | system | history
    first: str  # asked (and answered) first
    second: str  # asked later: must hit when must_hit, else must not
    must_hit: bool
    split: str  # dev | heldout
    context_first: list[dict[str, Any]] = field(default_factory=list)  # messages before the question
    context_second: list[dict[str, Any]] = field(default_factory=list)


def _rows(name: str) -> list[list[str]]:
    lines = (DATA / name).read_text().splitlines()
    return [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]


def _split(i: int) -> str:
    return "heldout" if i % 3 == 2 else "dev"


def _context(spec: str) -> list[dict[str, Any]]:
    """'system: ...' or 'user: ... || assistant: ...' -> chat messages."""
    out = []
    for part in spec.split("||"):
        role, _, text = part.strip().partition(":")
        out.append({"role": role.strip(), "content": text.strip()})
    return out


def load_pairs() -> list[Pair]:
    pairs = [Pair("paraphrase", a, b, True, _split(i)) for i, (a, b) in enumerate(_rows("cache_pairs_paraphrase.tsv"))]
    pairs += [Pair(k, a, b, False, _split(i)) for i, (k, a, b) in enumerate(_rows("cache_pairs_nearmiss.tsv"))]
    pairs += [Pair(k, qa, qb, False, _split(i), _context(ca), _context(cb))
              for i, (k, ca, cb, qa, qb) in enumerate(_rows("cache_pairs_context.tsv"))]
    return pairs
