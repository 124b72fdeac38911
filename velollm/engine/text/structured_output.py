"""StructuredOutputManager: grammar-constrained decoding on xgrammar.

Why xgrammar: it ships as a wheel (no Rust toolchain), compiles JSON Schema, EBNF and structural
tags (free text until a trigger, then a schema: what tool_choice="auto" needs), precomputes most of
the token mask at compile time so the per-step mask is cheap, and fills masks for a whole batch on
worker threads.

One manager per model: it builds the xgrammar TokenizerInfo once, compiles each spec once (LRU;
schemas are first narrowed by schema_bounds), hands out one matcher per request (with a JsonGuard
that ends runaway strings and winds the answer down near max_tokens) and masks a batch of logits
with one reused bitmask. The mask is CPU work: `fill_bitmask` can run while the forward pass is
in flight, `apply_bitmask` once the logits exist. xgrammar is imported lazily: `from velollm
import LLM` must not need it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from velollm.engine.text.grammar_vocab import (
    build_tokenizer_info,
    ids_bitmask,
    starts_with_bitmask,
)
from velollm.engine.text.json_guard import JsonGuard
from velollm.engine.text.rule_merge import merge_identical_rules
from velollm.engine.text.schema_bounds import JSON_OBJECT_SCHEMA, GrammarLimits, bound_schema, bound_tag_schemas
from velollm.errors import InvalidRequest
from velollm.sampling_params import ReasoningSpan, StructuredOutput

if TYPE_CHECKING:
    from velollm.engine.text.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

_PARAM = {
    "json_object": "response_format",
    "json_schema": "response_format",
    "ebnf": "grammar",
    "regex": "regex",
    "structural_tag": "tools",
}


# Compiled grammars kept, all together: schemas are the client's, and one compiled against a 150k-token
# vocabulary takes from kilobytes to megabytes (its token-mask cache): 256 entries could hold gigabytes.
CACHE_BYTES = 256 << 20


def _size(key: tuple[Any, ...], compiled: CompiledSpec) -> int:
    """An entry's bytes: the compiled grammar's and its key's, whose spec text (a tool set's JSON, up to
    0.4 MB) the cache keeps alive too: 256 tool sets whose long descriptions compile to small grammars
    could hold 100 MB the bound did not count."""
    return int(getattr(compiled.grammar, "memory_size_bytes", 0)) + sys.getsizeof(key[1])  # key: _key's


@dataclass(frozen=True)
class CompiledSpec:
    grammar: Any  # xgrammar.CompiledGrammar
    is_json: bool  # JsonGuard applies (JSON schemas and structural tags; not EBNF)
    triggers: tuple[str, ...] = ()  # free text until one of these (tool_choice="auto")
    reasoning: ReasoningSpan | None = None  # free thinking before all of it


class GrammarMatcher:
    """Grammar state of one request: fill its mask row, then advance with the sampled token."""

    def __init__(self, matcher: Any, guard: JsonGuard | None, token_bytes: list[bytes]) -> None:
        self._matcher = matcher
        self.guard = guard
        self._token_bytes = token_bytes

    def fill_mask(self, bitmask: torch.Tensor, row: int = 0) -> None:
        self._matcher.fill_next_token_bitmask(bitmask, row)

    def accept_token(self, token_id: int) -> bool:
        """False when the token breaks the grammar (the request should stop: it cannot recover)."""
        if not self._matcher.accept_token(token_id):
            return False
        if self.guard is not None:
            self.guard.feed(self._token_bytes[token_id] if token_id < len(self._token_bytes) else b"")
        return True

    def is_terminated(self) -> bool:
        return bool(self._matcher.is_terminated())


class StructuredOutputManager:
    """Compiles StructuredOutput specs (cached) and masks logits of constrained requests."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        vocab_size: int,
        *,
        stop_token_ids: Iterable[int] | None = None,
        limits: GrammarLimits | None = None,
        cache_size: int = 256,
        cache_bytes: int = CACHE_BYTES,
        max_threads: int = 4,
    ) -> None:
        """`stop_token_ids`: the ids that end a request (the engine's EOS set; default: the
        tokenizer's). A finished grammar allows only these."""
        import xgrammar as xgr

        self._xgr = xgr
        self.vocab_size = vocab_size
        self.limits = limits or GrammarLimits()
        self.tokenizer_info = build_tokenizer_info(tokenizer, vocab_size, stop_token_ids)
        self._token_to_id = tokenizer.token_to_id
        self._token_bytes: list[bytes] = list(self.tokenizer_info.decoded_vocab)
        stop = ids_bitmask(self.tokenizer_info.stop_token_ids, vocab_size)
        closers = starts_with_bitmask(self._token_bytes, (b"}", b"]"))
        comma = starts_with_bitmask(self._token_bytes, (b",",))
        spaces = starts_with_bitmask(self._token_bytes, (b" ", b"\t", b"\n", b"\r"))
        self._narrowing_masks = {  # in order of preference (see JsonGuard)
            "close_string": [starts_with_bitmask(self._token_bytes, (b'"',))],
            "close_structure": [stop, closers, comma, ~spaces],
            "stop": [stop],
        }
        self._compiler = xgr.GrammarCompiler(self.tokenizer_info, max_threads=max_threads, cache_enabled=False)
        self._cache: OrderedDict[tuple[str, str], CompiledSpec] = OrderedDict()
        self._cache_size = cache_size
        self._cache_bytes = cache_bytes
        self._num_cached_bytes = 0
        self._lock = threading.Lock()
        self._compiling: dict[tuple[Any, ...], threading.Event] = {}  # keys being compiled now (compile)
        # Capped at the cores there are: xgrammar would use no more and warns on stderr at every start.
        self._batch_filler = xgr.BatchGrammarMatcher(max_threads=max(1, min(max_threads, os.cpu_count() or 1)))
        self._bitmask = xgr.allocate_token_bitmask(8, vocab_size)
        self._device_bitmask: torch.Tensor | None = None

    # ---- compilation -------------------------------------------------------------------------

    def compile(self, spec: StructuredOutput, max_tokens: int | None = None) -> CompiledSpec:
        """`spec` compiled once (LRU cache; requests that ask for it while it compiles wait for it). Raises
        InvalidRequest for a schema or grammar that xgrammar cannot compile. `max_tokens` (the request's) bounds
        the thinking of a spec with `reasoning`, and is part of the grammar then."""
        key = self._key(spec, max_tokens)
        budget = key[-1]
        while True:
            with self._lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    return self._cache[key]
                pending = self._compiling.get(key)
                if pending is None:
                    pending = self._compiling[key] = threading.Event()
                    break
            # Being compiled by another request (the same tools sent again, a client's retry after it gave up
            # waiting): xgrammar's compile time grows faster than the grammar (seconds for a few dozen tool
            # schemas), so it is waited for rather than done twice; a failed one is tried again here.
            pending.wait()
        try:
            if spec.reasoning is None:
                compiled = self._compile(spec)
            else:
                compiled = self._compile_after_reasoning(spec, spec.reasoning, budget)
            with self._lock:
                old = self._cache.pop(key, None)
                self._num_cached_bytes += _size(key, compiled) - (_size(key, old) if old is not None else 0)
                self._cache[key] = compiled
                while len(self._cache) > 1 and (len(self._cache) > self._cache_size
                                                or self._num_cached_bytes > self._cache_bytes):
                    self._num_cached_bytes -= _size(*self._cache.popitem(last=False))
        finally:
            with self._lock:
                del self._compiling[key]
            pending.set()
        return compiled

    def _key(self, spec: StructuredOutput, max_tokens: int | None) -> tuple[Any, ...]:
        """The cache key; its last item is the thinking budget (None without `reasoning`)."""
        budget = self.limits.reasoning_budget(max_tokens) if spec.reasoning is not None else None
        return (spec.kind, spec.value, spec.reasoning, budget)

    def is_compiled(self, spec: StructuredOutput, max_tokens: int | None = None) -> bool:
        """Whether compile(spec, max_tokens) would return at once (cached)."""
        with self._lock:
            return self._key(spec, max_tokens) in self._cache

    @property
    def num_cached(self) -> int:
        return len(self._cache)

    @property
    def num_cached_bytes(self) -> int:
        return self._num_cached_bytes

    def _compile(self, spec: StructuredOutput) -> CompiledSpec:
        try:
            if spec.kind in ("json_object", "json_schema"):
                schema = JSON_OBJECT_SCHEMA if spec.kind == "json_object" else _load(spec)
                return CompiledSpec(self._compile_schema(bound_schema(schema, self.limits)), True)
            if spec.kind == "ebnf":
                return CompiledSpec(self._compiler.compile_grammar(spec.value), False)
            if spec.kind == "regex":
                return CompiledSpec(self._compiler.compile_grammar(self._xgr.Grammar.from_regex(spec.value)), False)
            if spec.kind == "structural_tag":
                tag = _load(spec)
                bound_tag_schemas(tag, self.limits)
                grammar = self._compile_patched(self._xgr.Grammar.from_structural_tag(json.dumps(tag)))
                return CompiledSpec(grammar, True, tuple(_triggers(tag)))
        except InvalidRequest:
            raise
        except Exception as e:  # xgrammar raises RuntimeError/ValueError/its own errors on bad input
            raise InvalidRequest(f"cannot compile the {spec.kind} constraint: {_reason(e)}",
                                 param=_PARAM[spec.kind]) from e
        raise InvalidRequest(f"unknown structured output kind {spec.kind!r}", param="response_format")

    def _compile_after_reasoning(self, spec: StructuredOutput, span: ReasoningSpan, budget: int | None) -> CompiledSpec:
        """The thinking (free text, at most `budget` tokens), then the spec: one structural tag."""
        try:
            answer = structural_format(spec)
            thinking = self._thinking_format(span, budget)
            if span.optional:
                thinking = {"type": "optional", "content": thinking}
            tag = {"type": "structural_tag", "format": {"type": "sequence", "elements": [
                thinking, {"type": "regex", "pattern": _GAP_AFTER_REASONING}, answer]}}
            bound_tag_schemas(tag, self.limits)
            grammar = self._compile_patched(self._xgr.Grammar.from_structural_tag(json.dumps(tag)))
            return CompiledSpec(grammar, spec.kind not in ("ebnf", "regex"), tuple(_triggers(answer)), span)
        except InvalidRequest:
            raise
        except Exception as e:
            raise InvalidRequest(f"cannot compile the {spec.kind} constraint: {_reason(e)}",
                                 param=_PARAM[spec.kind]) from e

    def _thinking_format(self, span: ReasoningSpan, budget: int | None) -> dict[str, Any]:
        """Free thinking between the span's markers, at most `budget` tokens. Markers that are one token
        in this vocabulary (Qwen3's, QwQ's and R1's `<think>` / `</think>`) are matched as that token,
        as the model writes them, and may not appear inside."""
        begin_id, end_id = (self._token_id(m) for m in (span.begin, span.end))
        if end_id is None:
            return {"type": "tag", "begin": span.begin, "end": span.end,
                    "content": {"type": "any_text", "max_tokens": budget}}
        excluded = sorted({end_id, *self.tokenizer_info.stop_token_ids, *([begin_id] if begin_id is not None else [])})
        begin: Any = {"type": "token", "token": begin_id} if begin_id is not None else span.begin
        return {"type": "tag", "begin": begin, "end": {"type": "token", "token": end_id},
                "content": {"type": "any_tokens", "exclude_tokens": excluded, "max_tokens": budget}}

    def _token_id(self, marker: str) -> int | None:
        token_id = self._token_to_id(marker) if marker else None
        return token_id if token_id is not None and 0 <= token_id < self.vocab_size else None

    def _compile_schema(self, schema: Any) -> Any:
        grammar = self._xgr.Grammar.from_json_schema(
            json.dumps(schema),
            any_whitespace=True,
            max_whitespace_cnt=self.limits.max_whitespace,
            strict_mode=True,
        )
        return self._compile_patched(grammar)

    def _compile_patched(self, grammar: Any) -> Any:
        # xgrammar 0.2.x writes strings with an explicit maxLength with a character class that
        # admits raw control characters, which is invalid JSON: exclude them. Each schema's copy of the
        # JSON basics is merged into one (rule_merge: the compile time of many tools).
        printed = str(grammar)
        text = printed.replace(_LOOSE_STRING_CHAR, _STRICT_STRING_CHAR)
        try:
            grammar = self._xgr.Grammar.from_ebnf(merge_identical_rules(text))
        except RuntimeError as e:  # a printed form xgrammar does not read back: compiled unmerged
            logger.warning("grammar compiled without merging its rules: %s", _reason(e))
            if text != printed:
                grammar = self._xgr.Grammar.from_ebnf(text)
        return self._compiler.compile_grammar(grammar)

    def new_matcher(self, spec: StructuredOutput, max_tokens: int | None = None) -> GrammarMatcher:
        """A matcher for one request; `max_tokens` (the request's own) sets when it winds down."""
        compiled = self.compile(spec, max_tokens)
        guard = None
        if compiled.is_json:
            guard = JsonGuard(self.limits.max_string_length, compiled.triggers, self.limits.wind_down_at(max_tokens),
                              reasoning=compiled.reasoning)
        return GrammarMatcher(self._xgr.GrammarMatcher(compiled.grammar), guard, self._token_bytes)

    # ---- masking -----------------------------------------------------------------------------

    def fill_bitmask(self, matchers: Sequence[GrammarMatcher | None]) -> list[int]:
        """Fill the mask rows of the constrained requests (CPU work: run it while the forward
        pass is in flight). Returns the row indices that carry a mask."""
        rows = [i for i, m in enumerate(matchers) if m is not None]
        if not rows:
            return rows
        if len(matchers) > self._bitmask.shape[0]:
            self._bitmask = self._xgr.allocate_token_bitmask(2 ** math.ceil(math.log2(len(matchers))), self.vocab_size)
            self._device_bitmask = None
        live = [matchers[i] for i in rows]
        if len(rows) >= 4:
            self._batch_filler.batch_fill_next_token_bitmask([m._matcher for m in live], self._bitmask, rows)  # type: ignore[union-attr]
        else:
            for row, m in zip(rows, live):
                m.fill_mask(self._bitmask, row)  # type: ignore[union-attr]
        for row, m in zip(rows, live):
            narrowing = m.guard.narrowing if m.guard is not None else None  # type: ignore[union-attr]
            for preferred in self._narrowing_masks[narrowing] if narrowing is not None else ():
                narrowed = self._bitmask[row] & preferred
                if bool(narrowed.any()):  # else the grammar cannot end here yet (minLength, pattern...)
                    self._bitmask[row] = narrowed
                    break
        return rows

    def apply_bitmask(self, logits: torch.Tensor, rows: list[int]) -> None:
        """Set the logits of disallowed tokens to -inf in `rows` (in place)."""
        if not rows:
            return
        bitmask = self._bitmask
        if logits.device.type == "cpu":
            _apply_bitmask_cpu(logits, bitmask, rows, self.vocab_size)
            return
        if self._device_bitmask is None or self._device_bitmask.device != logits.device:
            self._bitmask = self._bitmask.pin_memory()
            self._device_bitmask = torch.empty_like(self._bitmask, device=logits.device)
            bitmask = self._bitmask
        n = max(rows) + 1
        self._device_bitmask[:n].copy_(bitmask[:n], non_blocking=True)
        bitmask = self._device_bitmask
        self._xgr.apply_token_bitmask_inplace(logits, bitmask, vocab_size=self.vocab_size, indices=rows)

    def apply_masks(self, logits: torch.Tensor, matchers: Sequence[GrammarMatcher | None]) -> None:
        """Mask `logits` [B, V] for the rows whose matcher is not None."""
        self.apply_bitmask(logits, self.fill_bitmask(matchers))


_BIT_SHIFTS = torch.arange(32, dtype=torch.int32)


def _apply_bitmask_cpu(logits: torch.Tensor, bitmask: torch.Tensor, rows: list[int], vocab_size: int) -> None:
    """xgrammar's CPU apply, vectorised in torch (several times faster for batches of rows)."""
    index = torch.tensor(rows)
    bits = (bitmask[index].unsqueeze(-1) >> _BIT_SHIFTS) & 1  # [rows, words, 32], little-endian bits
    allowed = bits.view(len(rows), -1)[:, : logits.shape[1]].bool()
    if logits.shape[1] > vocab_size:
        allowed[:, vocab_size:] = False
    logits[index] = logits[index].masked_fill(~allowed, float("-inf"))


# Between the thinking and the answer: the newlines reasoning models write ("</think>\n\n{").
_GAP_AFTER_REASONING = r"[ \t\r\n]{0,4}"
_LOOSE_STRING_CHAR = r"[^\"\\\r\n]"
_STRICT_STRING_CHAR = r"[^\"\\\0-\x1f]"


# xgrammar's C++ errors start with a log stamp and its source location: "[18:05:30] /project/cpp/x.cc:94: "
_XGRAMMAR_STAMP = re.compile(r"^\[[0-9:]+\] \S+\.(?:cc|h):\d+: ")


def _reason(exc: Exception) -> str:
    """What was wrong, as a client reads it (xgrammar's stamp and trailing newline dropped)."""
    return _XGRAMMAR_STAMP.sub("", str(exc)).strip()


def structural_format(spec: StructuredOutput) -> dict[str, Any]:
    """The spec as a structural-tag format: what follows a model's thinking, or a tool-call grammar's other
    branch (velollm.tools.tool_grammar.calls_or_answer)."""
    if spec.kind == "json_object":
        return {"type": "json_schema", "json_schema": JSON_OBJECT_SCHEMA}
    if spec.kind == "json_schema":
        return {"type": "json_schema", "json_schema": _load(spec)}
    if spec.kind == "ebnf":
        return {"type": "grammar", "grammar": spec.value}
    if spec.kind == "regex":
        return {"type": "regex", "pattern": spec.value}
    if spec.kind == "structural_tag":
        return _load(spec)["format"]
    raise InvalidRequest(f"unknown structured output kind {spec.kind!r}", param="response_format")


def _load(spec: StructuredOutput) -> Any:
    try:
        return json.loads(spec.value)
    except ValueError as e:
        raise InvalidRequest(f"{spec.kind} is not valid JSON: {e}", param=_PARAM[spec.kind]) from e


def _triggers(node: Any) -> list[str]:
    if isinstance(node, list):
        return [t for n in node for t in _triggers(n)]
    if not isinstance(node, dict):
        return []
    own = list(node.get("triggers", [])) if node.get("type") == "triggered_tags" else []
    return own + [t for k, v in node.items() if isinstance(v, (dict, list)) for t in _triggers(v)]

