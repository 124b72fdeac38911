"""TokenCut against Ollama's runner formula, and the fitter's fallback to it (Ollama API semantics)."""

from __future__ import annotations

import pytest

from tests.context.test_truncation import WordTokenizer, agent_chat, render, words
from velollm.context.fitter import ContextFitter
from velollm.context.token_cut import answer_room, ollama_cut, ollama_shift
from velollm.context.turn_cache import TurnCache
from velollm.errors import ContextOverflow


def go_new_sequence(inputs: list[int], num_ctx: int, num_keep: int) -> list[int]:
    """runner/ollamarunner/runner.go NewSequence (text inputs: no SameBatch), line for line."""
    if num_keep < 0:
        num_keep = len(inputs)
    num_keep = min(num_keep, num_ctx - 1)
    if len(inputs) > num_ctx:
        discard = len(inputs) - num_ctx
        prompt_start = num_keep + discard
        if prompt_start >= len(inputs):
            raise RuntimeError("entire prompt removed by truncation")
        inputs = inputs[:num_keep] + inputs[prompt_start:]
    return inputs


CASES = [  # (prompt length, num_ctx, num_keep)
    (10, 8, 4), (10, 8, 0), (10, 8, -1), (10, 8, -7), (10, 8, 7), (10, 8, 8), (10, 8, 100),
    (8, 8, 4), (8, 8, -1), (9, 8, 4), (1, 1, 4), (5, 1, 4), (5, 1, 0), (5, 1, -1), (5, 2, 4),
    (1000, 4, 4), (1000, 512, 4), (513, 512, 511), (2, 1, 0),
]


@pytest.mark.parametrize("n,num_ctx,num_keep", CASES)
def test_cut_is_ollamas(n, num_ctx, num_keep):
    ids = list(range(100, 100 + n))
    cut = ollama_cut(n, num_ctx, num_keep)
    expected = go_new_sequence(ids, num_ctx, num_keep)
    assert (cut.apply(ids) if cut is not None else ids) == expected
    assert len(expected) == min(n, num_ctx)
    if cut is not None:
        assert expected[-1] == ids[-1] and cut.num_cut == n - num_ctx
        assert 0 <= cut.keep <= num_ctx - 1 and expected[: cut.keep] == ids[: cut.keep]


def test_cut_edges():
    assert ollama_cut(8, 8, 4) is None  # exactly the context: nothing goes (Ollama cuts only past it)
    assert ollama_cut(10, 1, 4).apply(list(range(10))) == [9]  # num_ctx 1: num_keep clamps to 0, the last id
    assert ollama_cut(10, 8, -1).keep == 7  # negative: the whole prompt, clamped to num_ctx - 1
    with pytest.raises(ValueError):
        ollama_cut(10, 0, 4)


def go_shift_discard(num_ctx: int, input_len: int, num_keep: int) -> int:
    """kvcache/causal.go (InputCache.ShiftDiscard), line for line."""
    target_free = max((num_ctx - num_keep) // 2, 1)
    current_free = num_ctx - input_len
    return max(target_free - current_free, 0)


@pytest.mark.parametrize("num_ctx,num_keep", [(8, 4), (8, 0), (8, -1), (8, 7), (8, 100), (1, 4), (2, 0), (512, 4)])
def test_shift_of_a_full_context_is_ollamas(num_ctx, num_keep):
    ids = list(range(100, 100 + num_ctx))
    shift = ollama_shift(num_ctx, num_ctx, num_keep)
    keep = min(num_ctx if num_keep < 0 else num_keep, num_ctx - 1)  # NewSequence's clamp
    assert shift.keep == keep and shift.num_cut == go_shift_discard(num_ctx, num_ctx, keep) >= 1
    assert shift.apply(ids) == ids[:keep] + ids[keep + shift.num_cut:]
    assert ollama_shift(num_ctx - 1, num_ctx, num_keep) is None  # room left: nothing to shift
    with pytest.raises(ValueError):
        ollama_shift(num_ctx + 1, num_ctx, num_keep)  # over the context: Ollama's 400, no shift


def long_last_message(n: int) -> list[dict]:
    return agent_chat()[:-1] + [{"role": "user", "content": words(n)}]


def count(messages) -> int:
    return len(WordTokenizer().encode(render(messages)))


def test_fitter_cuts_tokens_when_the_last_message_alone_leaves_no_room():
    """Ollama semantics (num_keep given): every turn that may go goes, then the ids are cut to the budget,
    the first num_keep and the tail staying; without num_keep (/v1) it stays a ContextOverflow."""
    chat = long_last_message(400)
    fitter = ContextFitter(render, WordTokenizer())
    with pytest.raises(ContextOverflow, match="last user message"):
        fitter.fit(chat, "truncate", 300, 50)
    fitted = fitter.fit(chat, "truncate", 300, 50, num_keep=4)
    kept = [m for i, m in enumerate(chat) if i not in (1, 2, 3, 4, 5, 6)]
    whole = WordTokenizer().encode(render(kept))
    assert fitted.report.dropped_messages == [1, 2, 3, 4, 5, 6]
    assert fitted.token_ids == whole[:4] + whole[len(whole) - 246:] and len(fitted.token_ids) == 250
    assert fitted.report.cut_tokens == (4, len(whole) - 246) and fitted.cut is not None
    assert fitted.report.num_original_tokens == count(chat) and fitted.report.num_prompt_tokens == 250
    assert f"cut_tokens=4-{len(whole) - 246}" in fitted.report.header()
    assert fitted.plan(300) is None  # a cut prompt's plan cannot fit the next turn: none is kept
    keep_all = fitter.fit(chat, "truncate", 300, 50, num_keep=-1)
    assert keep_all.token_ids == whole[:249] + whole[-1:]  # negative num_keep: all it can, as Ollama
    assert fitter.fit(chat, "truncate", 300, 50, num_keep=0).token_ids == whole[-250:]


def test_fitter_runs_an_over_budget_prompt_that_has_room_in_the_context():
    """Over the budget once the turns are gone, yet room left in the context: it runs as it is (Ollama cuts
    only a prompt longer than the context), the turns dropped reported; with nothing dropped, no report."""
    fitter = ContextFitter(render, WordTokenizer())
    chat = long_last_message(200)
    fitted = fitter.fit(chat, "truncate", 300, 100, num_keep=4)
    assert fitted.cut is None and fitted.report.cut_tokens is None and fitted.report.dropped_messages
    assert 200 < len(fitted.token_ids) < 300
    alone = [{"role": "user", "content": words(250)}]
    untouched = fitter.fit(alone, "truncate", 300, 100, num_keep=4)
    assert untouched.report is None and untouched.token_ids == WordTokenizer().encode(render(alone))


def test_compress_mode_falls_back_to_the_cut_too():
    from velollm.context.compressor import Compressor

    fitter = ContextFitter(render, WordTokenizer())
    compressor = Compressor(count_text=lambda text: len(text.split()))
    fitted = fitter.fit(long_last_message(400), "compress", 300, 50, compressor, num_keep=4)
    assert len(fitted.token_ids) == 250 and fitted.report.cut_tokens is not None


def test_a_cut_prompt_leaves_the_turn_cache_consistent():
    """The fitter remembers counted prompts' whole ids only: the next turn's prompt, which renders the cut
    turn again, is its text's ids, not the cut ones."""
    cache = TurnCache(min_chars=1)
    chat = long_last_message(400)
    ContextFitter(render, WordTokenizer(), cache).fit(chat, "truncate", 300, 50, num_keep=4)
    nxt = chat + [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "short"}]
    fitted = ContextFitter(render, WordTokenizer(), cache).fit(nxt, "truncate", 300, 50, num_keep=4)
    assert fitted.token_ids == WordTokenizer().encode(fitted.text) and fitted.cut is None


def test_answer_room_is_the_context_and_one_more_without_shift():
    # Ollama's runner with `shift: false` samples one token after a prompt that fills the context
    assert answer_room(8, shift=True) == 8 and answer_room(8, shift=False) == 9
