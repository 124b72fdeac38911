"""StructuredOutputManager: grammar-constrained decoding on xgrammar.

Why xgrammar: it ships as a wheel (no Rust toolchain), compiles JSON Schema, EBNF and structural
tags (free text until a trigger, then a schema: what tool_choice="auto" needs), precomputes most of
the token mask at compile time so the per-step mask is cheap, and fills masks for a whole batch on
worker threads.

One manager per model: it builds the xgrammar TokenizerInfo once, compiles each spec once (LRU),
hands out one matcher per request and masks a batch of logits with one reused bitmask.
xgrammar is imported lazily: `from velollm import LLM` must not need it.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from velollm.engine.schema_bounds import GrammarLimits, bound_schema, json_object_schema, string_cap_for
from velollm.errors import InvalidRequest
from velollm.sampling_params import StructuredOutput

if TYPE_CHECKING:
    from velollm.engine.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

_PARAM = {"json_object": "response_format", "json_schema": "response_format", "ebnf": "grammar", "structural_tag": "tools"}


# Special tokens that stand for tool-call markers: the grammar may produce them (a model emits
# its own marker token, not the marker spelled out), so requests with tools must be detokenized
# with skip_special_tokens=False.
TOOL_MARKER_TOKENS = frozenset({"<tool_call>", "</tool_call>", "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "<|python_tag|>"})


def build_tokenizer_info(tokenizer: Tokenizer, vocab_size: int) -> Any:
    """xgrammar TokenizerInfo for `tokenizer`, sized to the model's lm_head (`vocab_size`).

    Special tokens other than the stop tokens and tool markers get an empty string: xgrammar then
    never allows them inside the grammar, which matters because detokenization skips them (the
    text the client sees would differ from the text the grammar accepted).
    """
    import xgrammar as xgr

    backend = tokenizer.backend
    vocab = backend.get_vocab(with_added_tokens=True)
    stop_ids = sorted(i for i in tokenizer.eos_token_ids if i < vocab_size)
    markers = {i for t, i in vocab.items() if t in TOOL_MARKER_TOKENS}
    special = set(tokenizer.special_ids) - set(stop_ids) - markers
    encoded = [""] * vocab_size
    for token, token_id in vocab.items():
        if token_id < vocab_size and token_id not in special:
            encoded[token_id] = token
    try:
        meta = xgr.TokenizerInfo._detect_metadata_from_hf(backend.to_str())
        vocab_type, add_prefix_space = meta["vocab_type"], meta["add_prefix_space"]
    except Exception as e:  # private xgrammar helper: fall back to the vocabulary evidence below
        logger.debug("xgrammar metadata detection failed: %s", e)
        vocab_type, add_prefix_space = xgr.VocabType.RAW, False
    by_vocab = xgr.TokenizerInfo._detect_vocab_type_from_vocab(vocab) if hasattr(xgr.TokenizerInfo, "_detect_vocab_type_from_vocab") else None
    if by_vocab is not None and by_vocab != vocab_type:
        vocab_type = by_vocab
        add_prefix_space = by_vocab == xgr.VocabType.BYTE_FALLBACK and _prepends_space(tokenizer)
    return xgr.TokenizerInfo(
        encoded, vocab_type, vocab_size=vocab_size, stop_token_ids=stop_ids or None, add_prefix_space=add_prefix_space
    )


def _prepends_space(tokenizer: Tokenizer) -> bool:
    ids = tokenizer.encode("a", add_special_tokens=False)
    piece = tokenizer.id_to_token(ids[0]) if ids else None
    return bool(piece) and piece.startswith("▁")  # type: ignore[union-attr]


class GrammarMatcher:
    """Grammar state of one request: fill its mask row, then advance with the sampled token."""

    def __init__(self, matcher: Any) -> None:
        self._matcher = matcher

    def fill_mask(self, bitmask: torch.Tensor, row: int = 0) -> None:
        self._matcher.fill_next_token_bitmask(bitmask, row)

    def accept_token(self, token_id: int) -> bool:
        """False when the token breaks the grammar (the request should stop: it cannot recover)."""
        return bool(self._matcher.accept_token(token_id))

    def is_terminated(self) -> bool:
        return bool(self._matcher.is_terminated())

    def reset(self) -> None:
        self._matcher.reset()


class StructuredOutputManager:
    """Compiles StructuredOutput specs (cached) and masks logits of constrained requests."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        vocab_size: int,
        *,
        limits: GrammarLimits | None = None,
        cache_size: int = 256,
        max_threads: int = 4,
    ) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        self.vocab_size = vocab_size
        self.limits = limits or GrammarLimits()
        self.tokenizer_info = build_tokenizer_info(tokenizer, vocab_size)
        self._compiler = xgr.GrammarCompiler(self.tokenizer_info, max_threads=max_threads, cache_enabled=False)
        self._cache: OrderedDict[tuple[str, str, int], Any] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._batch_filler = xgr.BatchGrammarMatcher(max_threads=max_threads)
        self._bitmask = xgr.allocate_token_bitmask(8, vocab_size)
        self._device_bitmask: torch.Tensor | None = None

    # ---- compilation -------------------------------------------------------------------------

    def compile(self, spec: StructuredOutput, max_tokens: int | None = None) -> Any:
        """The compiled grammar of `spec`, bounded to answers that fit in `max_tokens`.

        Raises InvalidRequest for a schema or grammar xgrammar cannot compile.
        """
        budget = _budget_bucket(max_tokens)
        key = (spec.kind, spec.value, budget)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        compiled = self._compile(spec, budget)
        with self._lock:
            self._cache[key] = compiled
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return compiled

    @property
    def num_cached(self) -> int:
        return len(self._cache)

    def _compile(self, spec: StructuredOutput, budget: int | None) -> Any:
        try:
            if spec.kind == "json_object":
                schema = json_object_schema(self.limits, string_cap_for(self.limits, budget, num_strings=8))
                return self._compile_schema(schema)
            if spec.kind == "json_schema":
                return self._compile_schema(bound_schema(_load(spec), self.limits, budget))
            if spec.kind == "ebnf":
                return self._compiler.compile_grammar(spec.value)
            if spec.kind == "structural_tag":
                tag = _load(spec)
                _bound_tag(tag, self.limits, budget)
                return self._compile_patched(self._xgr.Grammar.from_structural_tag(json.dumps(tag)))
        except InvalidRequest:
            raise
        except Exception as e:  # xgrammar raises RuntimeError/ValueError/its own errors on bad input
            raise InvalidRequest(f"cannot compile the {spec.kind} constraint: {e}", param=_PARAM[spec.kind]) from e
        raise InvalidRequest(f"unknown structured output kind {spec.kind!r}", param="response_format")

    def _compile_schema(self, schema: Any) -> Any:
        grammar = self._xgr.Grammar.from_json_schema(
            json.dumps(schema),
            any_whitespace=self.limits.max_whitespace != 0,
            max_whitespace_cnt=self.limits.max_whitespace or None,
            strict_mode=True,
        )
        return self._compile_patched(grammar)

    def _compile_patched(self, grammar: Any) -> Any:
        # xgrammar 0.2.x writes length-bounded strings with a character class that admits raw
        # control characters (invalid JSON) and no escapes: swap in JSON's own string character.
        text = str(grammar)
        if _LOOSE_STRING_CHAR in text:
            text = text.replace(_LOOSE_STRING_CHAR, _JSON_STRING_CHAR)
            grammar = self._xgr.Grammar.from_ebnf(text)
        return self._compiler.compile_grammar(grammar)

    def new_matcher(self, spec: StructuredOutput, max_tokens: int | None = None) -> GrammarMatcher:
        return GrammarMatcher(self._xgr.GrammarMatcher(self.compile(spec, max_tokens)))

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
        live = [matchers[i]._matcher for i in rows]  # type: ignore[union-attr]
        if len(rows) >= 4:
            self._batch_filler.batch_fill_next_token_bitmask(live, self._bitmask, rows)
        else:
            for row, m in zip(rows, live):
                m.fill_next_token_bitmask(self._bitmask, row)
        return rows

    def apply_bitmask(self, logits: torch.Tensor, rows: list[int]) -> None:
        """Set the logits of disallowed tokens to -inf in `rows` (in place)."""
        if not rows:
            return
        bitmask = self._bitmask
        if logits.device.type != "cpu":
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


_LOOSE_STRING_CHAR = r'(([^\"\\\r\n]))'
_JSON_STRING_CHAR = (
    r'(([^\"\\\0-\x1f]) | ("\\" ([\"\\/bfnrt] | ("u" [A-Fa-f0-9] [A-Fa-f0-9] [A-Fa-f0-9] [A-Fa-f0-9]))))'
)


def _budget_bucket(max_tokens: int | None) -> int | None:
    # Powers of two keep the cache small; rounding down keeps the bound within max_tokens.
    return None if max_tokens is None else 2 ** int(math.log2(max(1, max_tokens)))


def _load(spec: StructuredOutput) -> Any:
    try:
        return json.loads(spec.value)
    except ValueError as e:
        raise InvalidRequest(f"{spec.kind} is not valid JSON: {e}", param=_PARAM[spec.kind]) from e


def _num_values(node: Any) -> int:
    """How many JSON values a structural-tag format can produce at most (4 where unbounded: about
    where a model that stops at random ends)."""
    if isinstance(node, list):
        return sum(_num_values(n) for n in node)
    if not isinstance(node, dict):
        return 0
    kind = node.get("type")
    if kind == "json_schema":
        return 1
    if kind == "repeat":
        return int(node.get("max", 4)) * _num_values(node.get("content"))
    if kind == "or":
        return max((_num_values(n) for n in node.get("elements", [])), default=0)
    if kind in ("triggered_tags", "tags_with_separator"):
        one = max((_num_values(n) for n in node.get("tags", [])), default=0)
        return one if node.get("stop_after_first") else 4 * one
    return sum(_num_values(v) for k, v in node.items() if isinstance(v, (dict, list)))


def _bound_tag(tag: Any, limits: GrammarLimits, budget: int | None) -> None:
    """Bound every JSON schema inside a structural tag, in place, sharing the budget."""
    share = None if budget is None else max(1, budget // max(1, _num_values(tag)))
    _bound_schemas(tag, limits, share)


def _bound_schemas(node: Any, limits: GrammarLimits, budget: int | None) -> None:
    if isinstance(node, list):
        for item in node:
            _bound_schemas(item, limits, budget)
    elif isinstance(node, dict):
        if node.get("type") == "json_schema" and "json_schema" in node:
            node["json_schema"] = bound_schema(node["json_schema"], limits, budget)
            if limits.max_whitespace is not None:
                node.setdefault("max_whitespace_cnt", limits.max_whitespace)
            return
        for value in node.values():
            _bound_schemas(value, limits, budget)
