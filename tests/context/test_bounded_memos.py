"""The context layer's memos hold client-sized texts and ids: each is driven past its bound here, and
stays within it (entries and characters, or ids), the most recent entries still answering."""

from __future__ import annotations

import pytest

from tests.context.char_chat import CharTokenizer
from velollm.context import json_minify, whitespace
from velollm.context.lingua_step import LinguaStep
from velollm.context.text_memo import TextMemo
from velollm.context.turn_cache import TurnCache


def test_text_memo_drops_least_recently_used_beyond_entries_and_chars():
    memo = TextMemo(max_entries=3, max_chars=100)
    for i in range(10):
        memo.put(f"k{i}", "v" * 8)
    assert len(memo) == 3 and memo.get("k9") and memo.get("k0") is None
    memo.get("k7")  # now the most recently used
    memo.put("big", "x" * 60)  # 63 chars: the older ones go until the total fits
    assert memo.num_chars <= 100 and memo.get("big") and memo.get("k7") and memo.get("k8") is None
    memo.put("huge", "y" * 200)  # larger than the memo: not kept, nothing evicted for it
    assert memo.get("huge") is None and memo.get("big")
    memo.put("big", "z")  # replaced: its old size is given back
    assert memo.num_chars == sum(len(k) + len(memo.get(k) or "") for k in ("big", "k7", "k9"))
    with pytest.raises(ValueError):
        TextMemo(0, 10)


def test_minify_and_squeeze_memos_stay_within_their_characters():
    body = '{"a": [1, 2, 3], "pad": "' + "p" * 100_000 + '"}'
    for i in range(200):  # 200 distinct 100 kB tool results: 40 MB through each memo
        text = body.replace('"a"', f'"a{i}"')
        assert json_minify.minify(text) == text.replace(", ", ",").replace(": ", ":")
        assert whitespace.squeeze(text + "   \n") == text + "\n"
    for memo in (json_minify._MEMO, whitespace._MEMO):
        assert memo.num_chars <= memo.max_chars and len(memo) <= memo.max_entries
    assert json_minify.minify("not json") is None and json_minify.minify("[1, 2]") == "[1,2]"


def test_lingua_step_cache_is_bounded_in_entries_and_chars():
    step = LinguaStep(lambda: None, capacity=4)  # type: ignore[arg-type, return-value]
    for i in range(20):
        step._put(f"{i:064x}", "word " * 10)
    assert len(step._cache) == 4 and step._get(f"{19:064x}") and step._get(f"{0:064x}") is None
    assert step._cache.max_chars > 0


def test_turn_cache_is_bounded_in_ids_as_well_as_entries():
    tok = CharTokenizer()
    cache = TurnCache(capacity=100, min_chars=4, max_ids=10_000)
    for i in range(50):  # 50 long prompts of 1,000 ids: 50,000 ids offered
        prompt = f"<user>{i:04d} " + "long context " * 76
        cache.remember(prompt, list(range(1000)))
    assert cache.num_ids <= 10_000 and len(cache) == 10
    last = f"<user>{49:04d} " + "long context " * 76
    assert cache.encode(tok, last + "more").num_reused == 1000  # the most recent still answers
    cache.remember("x" * 100, list(range(20_000)))  # larger than the whole cache: not kept
    assert cache.num_ids <= 10_000 and len(cache) == 10


def test_per_model_context_caches_keep_the_recent_models_only():
    """On-demand models come and go: each one's TurnCache, plans and summaries must not stay forever."""
    from prometheus_client import CollectorRegistry

    from velollm.api.context_fit import MAX_MODELS, ContextState
    from velollm.context.metrics import ContextMetrics

    ctx = ContextState(ContextMetrics(CollectorRegistry()))
    first = ctx.turn_cache("m0")
    for i in range(3 * MAX_MODELS):
        ctx.turn_cache(f"m{i}"), ctx.plan_cache(f"m{i}"), ctx.summary_cache(f"m{i}")
        assert ctx.turn_cache("m0") is first  # used all along: kept
    for table in (ctx.turn_caches, ctx.plans, ctx.summaries):
        assert len(table) == MAX_MODELS and f"m{3 * MAX_MODELS - 1}" in table
    assert "m0" not in ctx.plans and "m1" not in ctx.turn_caches
