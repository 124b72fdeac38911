"""RoutingPolicy: the virtual model's rules, read from the `[routing]` table of velollm.toml.

A request for the virtual name (default `auto`) goes to the model of the first rule whose every
condition holds; when no rule matches and labeled examples exist, to the model the k nearest examples
vote for (velollm/complexity/knn.py); else to `default`. `decide` is a pure function of the features
and the vote, so the policy is tested without a server (velollm/complexity/README.md documents it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from velollm.complexity.features import FORMATS, RequestFeatures
from velollm.complexity.signals import CODE_THRESHOLD, MATH_THRESHOLD

DEFAULT_NAME = "auto"
DEFAULT_K = 5
DEFAULT_MIN_SIMILARITY = 0.3
_INT_CONDITIONS = ("min_tokens", "max_tokens", "min_chars", "max_chars", "min_turns", "max_turns",
                   "min_messages", "max_messages")
_BOOL_CONDITIONS = ("tools", "images", "code", "math", "reasoning")
CONDITIONS = (*_INT_CONDITIONS, *_BOOL_CONDITIONS, "format", "pattern")


@dataclass(frozen=True)
class RouteDecision:
    """Where one request goes: `model` (a served, on-demand or upstream name), `route` (the rule's name,
    `knn` or `default`: the metric label) and `reason` (what matched, for the x-velollm-route header)."""

    model: str
    route: str
    reason: str

    def header(self) -> str:
        text = f"{self.route}; model={self.model}; {self.reason}"
        return text.encode("ascii", "replace").decode()  # header values are ASCII here


@dataclass(frozen=True)
class Condition:
    """Conditions of one rule; None: not checked. Bounds are inclusive: `min_tokens = 1000` holds at
    1000 estimated tokens. `format`: the formats that match (text, json, json_schema); `pattern`: a
    regular expression searched (case-insensitive) in the last user message."""

    min_tokens: int | None = None
    max_tokens: int | None = None
    min_chars: int | None = None
    max_chars: int | None = None
    min_turns: int | None = None
    max_turns: int | None = None
    min_messages: int | None = None
    max_messages: int | None = None
    tools: bool | None = None
    images: bool | None = None
    code: bool | None = None
    math: bool | None = None
    reasoning: bool | None = None
    format: tuple[str, ...] | None = None
    pattern: re.Pattern[str] | None = None

    def check(self, f: RequestFeatures) -> str | None:
        """Why every condition holds (e.g. "tokens 1520 >= 1000, code score 5"), or None when one fails."""
        reasons: list[str] = []
        measured = {"tokens": f.num_tokens, "chars": f.num_chars, "turns": f.num_turns, "messages": f.num_messages}
        for what, value in measured.items():
            low, high = getattr(self, f"min_{what}"), getattr(self, f"max_{what}")
            if low is not None:
                if value < low:
                    return None
                reasons.append(f"{what} {value} >= {low}")
            if high is not None:
                if value > high:
                    return None
                reasons.append(f"{what} {value} <= {high}")
        flags = {"tools": (f.has_tools, "tools"), "images": (f.has_images, "images"),
                 "code": (f.code_score >= CODE_THRESHOLD, f"code score {f.code_score}"),
                 "math": (f.math_score >= MATH_THRESHOLD, f"math score {f.math_score}"),
                 "reasoning": (f.reasoning, "reasoning requested")}
        for name, (present, reason) in flags.items():
            wanted = getattr(self, name)
            if wanted is not None:
                if present != wanted:
                    return None
                reasons.append(reason if wanted else f"no {name}")
        if self.format is not None:
            if f.format not in self.format:
                return None
            reasons.append(f"format {f.format}")
        if self.pattern is not None:
            if self.pattern.search(f.query) is None:
                return None
            reasons.append(f"pattern /{self.pattern.pattern}/")
        return ", ".join(reasons) or "always"


@dataclass(frozen=True)
class Rule:
    name: str
    model: str
    when: Condition


@dataclass(frozen=True)
class Example:
    """One labeled example for the kNN: a prompt and the model that should answer prompts like it."""

    text: str
    model: str


@dataclass(frozen=True)
class KnnSettings:
    examples: tuple[Example, ...]
    k: int = DEFAULT_K
    min_similarity: float = DEFAULT_MIN_SIMILARITY  # neighbours less similar than this do not vote
    embedding_model: str | None = None  # velollm.embed specifier; None: all-MiniLM-L6-v2, found offline

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"routing.knn.k must be >= 1, got {self.k}")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise ValueError(f"routing.knn.min_similarity must be in [-1, 1], got {self.min_similarity}")


@dataclass(frozen=True)
class KnnVote:
    """The kNN's answer: the winning model, its share of the similarity-weighted votes, the voters."""

    model: str
    share: float
    num_voters: int
    top_similarity: float


@dataclass(frozen=True)
class RoutingPolicy:
    default: str
    name: str = DEFAULT_NAME
    rules: tuple[Rule, ...] = ()
    knn: KnnSettings | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.default:
            raise ValueError("routing.name and routing.default must be non-empty model names")
        if self.name in self.models:
            raise ValueError(f"routing: the virtual model {self.name!r} cannot also be a target")
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"routing: rule names must be unique, got {names}")
        if {"default", "knn"} & set(names):
            raise ValueError("routing: `default` and `knn` are reserved route names")

    @property
    def models(self) -> tuple[str, ...]:
        """Every model the policy can choose, the default first, each once."""
        examples = self.knn.examples if self.knn is not None else ()
        chosen = [self.default, *(r.model for r in self.rules), *(e.model for e in examples)]
        return tuple(dict.fromkeys(chosen))

    def match(self, f: RequestFeatures) -> RouteDecision | None:
        """The first rule that holds for `f`, or None."""
        for rule in self.rules:
            reason = rule.when.check(f)
            if reason is not None:
                return RouteDecision(rule.model, rule.name, reason)
        return None

    def decide(self, f: RequestFeatures, vote: KnnVote | None = None) -> RouteDecision:
        """Rules first, then the kNN's vote (when it has one), then the default."""
        decision = self.match(f)
        if decision is not None:
            return decision
        if vote is not None:
            return RouteDecision(vote.model, "knn", f"{vote.num_voters} neighbours, {vote.share:.0%} of the vote, "
                                                    f"top similarity {vote.top_similarity:.2f}")
        return RouteDecision(self.default, "default", "no rule matched")

    @classmethod
    def from_table(cls, table: Mapping[str, Any], base_dir: Path | None = None) -> RoutingPolicy:
        """The policy of a parsed `[routing]` table; ValueError naming the key for anything wrong.
        `base_dir`: where a relative `knn.examples_file` is (the config file's folder; default: cwd)."""
        _known(table, ("name", "default", "rules", "knn"), "routing")
        rules = table.get("rules", [])
        if not isinstance(rules, list):
            raise ValueError("routing.rules must be an array of tables ([[routing.rules]])")
        knn = table.get("knn")
        return cls(default=_str(table, "default", "routing", required=True),
                   name=_str(table, "name", "routing") or DEFAULT_NAME,
                   rules=tuple(_rule(r, i) for i, r in enumerate(rules)),
                   knn=_knn(knn, base_dir) if knn is not None else None)


def _example(table: Any, where: str) -> Example:
    _known(table, ("text", "model"), where)
    return Example(_str(table, "text", where, required=True), _str(table, "model", where, required=True))


def _examples_file(name: str, base_dir: Path | None) -> list[Example]:
    """JSON Lines, one {"text": ..., "model": ...} object a line (blank lines skipped)."""
    path = Path(name).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"routing.knn.examples_file {str(path)!r} cannot be read: {exc.strerror or exc}") from exc
    out = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            where = f"routing.knn.examples_file {path.name} line {number}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not JSON ({exc.msg})") from exc
            out.append(_example(value, where))
    return out


def _known(table: Any, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(table, Mapping):
        raise ValueError(f"{where} must be a table, got {type(table).__name__}")
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(keys)}")


def _str(table: Mapping[str, Any], key: str, where: str, required: bool = False) -> str | None:
    value = table.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}.{key} must be a non-empty string, got {value!r}")
    return value


def _rule(table: Any, index: int) -> Rule:
    where = f"routing.rules[{index}]"
    _known(table, ("name", "model", *CONDITIONS), where)
    kwargs: dict[str, Any] = {}
    for key in _INT_CONDITIONS:
        value = table.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{where}.{key} must be an integer >= 0, got {value!r}")
            kwargs[key] = value
    for key in _BOOL_CONDITIONS:
        value = table.get(key)
        if value is not None:
            if not isinstance(value, bool):
                raise ValueError(f"{where}.{key} must be true or false, got {value!r}")
            kwargs[key] = value
    if "format" in table:
        kwargs["format"] = _formats(table["format"], where)
    if "pattern" in table:
        kwargs["pattern"] = _pattern(table["pattern"], where)
    return Rule(name=_str(table, "name", where) or f"rule{index}", model=_str(table, "model", where, required=True),
                when=Condition(**kwargs))


def _formats(value: Any, where: str) -> tuple[str, ...]:
    """`format = "json"`, a list of formats, or `true` (any structured output) / `false` (plain text)."""
    if isinstance(value, bool):
        return ("json", "json_schema") if value else ("text",)
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or any(v not in FORMATS for v in values):
        raise ValueError(f"{where}.format must be true, false, or one or more of {list(FORMATS)}, got {value!r}")
    return tuple(values)


def _pattern(value: Any, where: str) -> re.Pattern[str]:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}.pattern must be a non-empty regular expression, got {value!r}")
    try:
        return re.compile(value, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"{where}.pattern is not a valid regular expression: {exc}") from exc


def _knn(table: Any, base_dir: Path | None) -> KnnSettings:
    _known(table, ("k", "min_similarity", "embedding_model", "examples", "examples_file"), "routing.knn")
    examples = table.get("examples", [])
    if not isinstance(examples, list):
        raise ValueError("routing.knn.examples must be an array of {text, model} tables")
    parsed = [_example(ex, f"routing.knn.examples[{i}]") for i, ex in enumerate(examples)]
    if "examples_file" in table:
        parsed += _examples_file(_str(table, "examples_file", "routing.knn", required=True), base_dir)
    if not parsed:
        raise ValueError("routing.knn needs examples: a non-empty `examples` array or an `examples_file`")
    k, min_similarity = table.get("k", DEFAULT_K), table.get("min_similarity", DEFAULT_MIN_SIMILARITY)
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"routing.knn.k must be an integer, got {k!r}")
    if isinstance(min_similarity, bool) or not isinstance(min_similarity, (int, float)):
        raise ValueError(f"routing.knn.min_similarity must be a number, got {min_similarity!r}")
    return KnnSettings(tuple(parsed), k, float(min_similarity), _str(table, "embedding_model", "routing.knn"))

