"""FitPlan reuse: the next turn of a chat past its context keeps the previous turn's cut and summary, so
its prompt starts with the previous prompt and answer, token for token (char 'tokenizer', TurnCache)."""

from __future__ import annotations

import pytest

from velollm.context.compressor import Compressor
from velollm.context.fit_plan import FitPlan, PlanCache, prefix_digests
from velollm.context.fitter import ContextFitter, FittedPrompt
from velollm.context.summary import with_summary
from velollm.context.turn_cache import TurnCache
from velollm.context.whitespace import squeeze_whitespace

from tests.context.char_chat import DOC, CharTokenizer, render


def user(i: int) -> dict:
    return {"role": "user", "content": f"question {i}: " + "how many sacks of grain today? " * 3}


def test_prefix_digests_chain_order_and_content():
    a, b = user(1), user(2)
    d = prefix_digests([a, b])
    assert prefix_digests([a]) == d[:1] and prefix_digests([dict(a), dict(b)]) == d
    assert prefix_digests([b, a])[1] != d[1] and prefix_digests([a, user(3)])[1] != d[1]


def test_plan_cache_finds_the_longest_prefix_of_the_same_mode_and_context():
    plans = PlanCache(capacity=2)
    chat = [user(i) for i in range(4)]
    short = FitPlan("truncate", 100, (0,), (), None, False)
    long = FitPlan("truncate", 100, (0, 1), (), None, False)
    plans.put(prefix_digests(chat[:2]), short)
    plans.put(prefix_digests(chat[:3]), long)
    assert plans.longest(prefix_digests(chat), "truncate", 100) is long
    assert plans.longest(prefix_digests(chat[:2]), "truncate", 100) is short
    assert plans.longest(prefix_digests(chat), "compress", 100) is None
    assert plans.longest(prefix_digests(chat), "truncate", 200) is None
    plans.put(prefix_digests(chat[:1]), short)  # capacity 2: the least recently used (chat[:3]'s) goes
    assert plans.longest(prefix_digests(chat), "truncate", 100) is short


def converse(mode: str, turns: int, context_len: int, reserve: int) -> list[tuple[FittedPrompt, list[int], bool]]:
    """A chat driven like fit_chat does: the plan of the previous turn first, a fresh fit when it no longer
    fits; each answer remembered as generated ids. Returns (fitted, answer ids, reused) per turn."""
    tok, cache, plans = CharTokenizer(), TurnCache(min_chars=4), PlanCache()
    compressor = Compressor() if mode == "compress" else None
    messages = [{"role": "system", "content": "sys"}]
    out = []
    for i in range(turns):
        messages.append(user(i))
        if i % 3 == 1:  # a repeated tool output: compress dedupes it
            messages.append({"role": "tool", "content": DOC})
        fitter = ContextFitter(render, tok, cache)
        digests = prefix_digests(messages)
        plan = plans.longest(digests, mode, context_len)
        fitted = fitter.reuse(messages, plan, context_len, reserve, compressor) if plan is not None else None
        reused = fitted is not None
        if fitted is None:
            fitted = fitter.fit(messages, mode, context_len, reserve, compressor)
        if (made := fitted.plan(context_len)) is not None:
            plans.put(digests, made)
        answer = [0x2603, 0x20, 0x41 + i]  # ids whose text is re-tokenised the same way here; spliced anyway
        cache.remember_turn(tok, fitted.text, fitted.token_ids, answer)
        messages.append({"role": "assistant", "content": tok.decode(answer)})
        out.append((fitted, answer, reused))
    return out


@pytest.mark.parametrize("mode", ["truncate", "compress"])
def test_past_the_context_turn_n_plus_1_starts_with_turn_n_prompt_and_answer(mode):
    context_len, reserve = 3000, 50
    turns = converse(mode, 30, context_len, reserve)
    reused = 0
    for (prev, answer, _), (cur, _, was_reused) in zip(turns, turns[1:]):
        assert len(cur.token_ids) <= context_len - reserve
        if was_reused:
            reused += 1
            head = prev.token_ids + answer
            assert cur.token_ids[: len(head)] == head  # token for token
            assert cur.num_reused == len(head)
            assert cur.report.dropped_messages == prev.report.dropped_messages
            assert "reuse" in cur.report.step_seconds
    assert sum(f.report is not None for f, _, _ in turns) > 10
    assert reused >= 12  # past the context, most turns keep the previous plan


def test_reuse_gives_way_when_the_plan_no_longer_fits_or_is_not_needed():
    fitter = ContextFitter(render, CharTokenizer())
    chat = [{"role": "system", "content": "sys"}] + [user(i) for i in range(6)]
    plan = FitPlan("truncate", 500, (1, 2), (), None, False)
    assert fitter.reuse(chat[:2], plan, 500, 10) is None  # fits as sent
    assert fitter.reuse(chat, plan, 300, 10) is None  # still too long with the plan's cut
    fitted = fitter.reuse(chat, plan, 500, 10)
    assert fitted is not None and fitted.messages == [chat[0], *chat[3:]]
    assert fitted.report.dropped_messages == [1, 2] and fitted.report.num_original_tokens == len(render(chat))


def test_reused_summary_goes_where_the_summariser_put_it():
    fitter = ContextFitter(render, CharTokenizer())
    chat = [{"role": "system", "content": "sys"}] + [user(i) for i in range(6)]
    plan = FitPlan("compress", 600, (), (1, 2), "they talked about sacks", True)
    fitted = fitter.reuse(chat, plan, 600, 10, Compressor())
    assert fitted is not None and fitted.summary == plan.summary
    assert fitted.messages == with_summary(Compressor().apply([chat[0], *chat[3:]]), plan.summary)
    assert fitted.report.summarized_messages == [1, 2] and fitted.plan(600) == plan


def test_whitespace_leaves_the_assistants_answers_as_generated():
    answer = {"role": "assistant", "content": "two  spaces   and trailing  \n\n\n\nend"}
    assert squeeze_whitespace([answer]) == [answer]
    assert squeeze_whitespace([{**answer, "role": "user"}])[0]["content"] == "two spaces and trailing\n\nend"
