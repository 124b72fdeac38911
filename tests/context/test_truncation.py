"""Turns, truncation and the fitter on plain messages (a word-count 'tokenizer')."""

from __future__ import annotations

import pytest

from velollm.context.fitter import ContextFitter, output_reserve
from velollm.context.truncation import truncate
from velollm.context.turns import Turns
from velollm.errors import ContextOverflow


class WordTokenizer:
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [len(w) for w in text.split()]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return " ".join("x" * i for i in ids)


def render(messages) -> str:
    return " ".join(f"<{m['role']}> {m.get('content') or ''}" for m in messages) + " <assistant>"


def words(n: int) -> str:
    return " ".join(["w"] * n)


def agent_chat() -> list[dict]:
    return [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": words(50)},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {}}}]},
        {"role": "tool", "tool_call_id": "c1", "content": words(100)},
        {"role": "assistant", "content": words(20)},
        {"role": "user", "content": words(30)},
        {"role": "assistant", "content": words(30)},
        {"role": "system", "content": "a mid-history note"},
        {"role": "user", "content": "last question"},
    ]


def test_units_keep_tool_pairs_together_and_spare_system_and_last_user():
    turns = Turns.of(agent_chat())
    assert turns.units == ((1, 2, 3, 4), (5, 6))
    kept, dropped = turns.without(1)
    assert dropped == [1, 2, 3, 4]
    assert [m["role"] for m in kept] == ["system", "user", "assistant", "system", "user"]


def test_units_of_a_history_starting_with_an_assistant_message():
    messages = [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    assert Turns.of(messages).units == ((0,), (1, 2))


def count(messages) -> int:
    return len(WordTokenizer().encode(render(messages)))


@pytest.mark.parametrize("budget, dropped", [(400, []), (150, [1, 2, 3, 4]), (30, [1, 2, 3, 4, 5, 6])])
def test_truncate_drops_the_fewest_oldest_turns(budget, dropped):
    turns = Turns.of(agent_chat())
    if not dropped:
        assert count(agent_chat()) <= budget
        return
    cut = truncate(turns, count, budget, 1000)
    assert cut.dropped == dropped and cut.num_tokens == count(cut.messages) <= budget


def test_truncate_that_cannot_fit_says_so():
    with pytest.raises(ContextOverflow, match="system prompt and the last user message are always kept") as info:
        truncate(Turns.of(agent_chat()), count, 5, 100)
    assert "oldest turns dropped" in str(info.value)


def test_truncate_that_cannot_fit_reads_well_in_responses_terms():
    """The Responses API's 400 (truncation: auto on one long input) read 'Even with the 0 oldest input dropped
    (...), the input have 18015 tokens': nothing was dropped, and "messages" became "input" in every place."""
    from velollm.api.responses import in_responses_terms

    with pytest.raises(ContextOverflow) as info:
        truncate(Turns.of([{"role": "user", "content": "word " * 50}]), count, 5, 100)
    message = str(in_responses_terms(info.value))
    assert "dropped" not in message and " have " not in message, message
    assert message.endswith("Please reduce the length of the input.") and "more than the 5 the prompt" in message


def test_fitter_error_mode_raises_openai_message():
    fitter = ContextFitter(render, WordTokenizer())
    with pytest.raises(ContextOverflow, match="maximum context length is 100 tokens. However, your messages "
                                              "resulted in"):
        fitter.fit(agent_chat(), "error", 100, 1)


def test_fitter_truncate_reports_what_it_dropped():
    fitter = ContextFitter(render, WordTokenizer())
    fitted = fitter.fit(agent_chat(), "truncate", 200, 50)
    assert fitted.report is not None and fitted.report.dropped_messages == [1, 2, 3, 4]
    assert fitted.report.num_original_tokens == count(agent_chat())
    assert len(fitted.token_ids) == fitted.report.num_prompt_tokens <= 150
    assert fitted.report.header().startswith(f"mode=truncate; tokens={count(agent_chat())}->")
    untouched = fitter.fit(agent_chat(), "truncate", 1000, 50)
    assert untouched.report is None and untouched.messages == agent_chat()


def test_output_reserve():
    assert output_reserve(4096, None) == 512
    assert output_reserve(100_000, None) == 1024
    assert output_reserve(4096, 100) == 100
    assert output_reserve(4096, 10_000) == 2048
    assert output_reserve(1, None) == 1


def test_stable_target_rounds_the_cut_to_steps():
    from velollm.context.truncation import stable_target

    assert stable_target(90, 100, 25) == 100  # fits: no cut
    assert stable_target(110, 100, 25) == 85  # 10 over: one step of 25
    assert stable_target(130, 100, 25) == 80  # 30 over: two steps
    assert stable_target(110, 100, 0) == 100


def test_truncation_keeps_its_cut_while_the_chat_grows():
    """Adding turns at the end keeps the same oldest turns dropped until the growth passes a step."""
    fitter = ContextFitter(render, WordTokenizer())
    chat = [{"role": "system", "content": "s"}]
    cuts = []
    for i in range(30):
        chat = chat + [{"role": "user", "content": words(20)}, {"role": "assistant", "content": words(20)}]
        fitted = fitter.fit(chat + [{"role": "user", "content": "q"}], "truncate", 500, 100)
        if fitted.report is not None:
            cuts.append(len(fitted.report.dropped_messages))
            assert len(fitted.token_ids) <= 400
    assert len(cuts) > 10 and len(set(cuts)) < len(cuts) / 2  # the cut moves in steps, not every turn


def test_id_window_drops_the_oldest_context_ids_after_num_keep_in_steps():
    from velollm.context.id_window import fit_ids

    ids = list(range(1000))
    assert fit_ids(ids, 100, 4, 1000) is None  # fits
    w = fit_ids(ids, 100, 4, 800)  # 200 over, steps of 200
    assert (w.start, w.end) == (4, 204) and w.token_ids == ids[:4] + ids[204:]
    # The conversation grows at the end: the same ids go until it grows past the next step.
    grown = fit_ids(list(range(1150)), 100, 4, 800)
    assert (grown.start, grown.end) == (4, 404) and grown.token_ids[: len(w.token_ids)] != w.token_ids
    same = fit_ids(list(range(1000)) + list(range(5000, 5100)), 100, 4, 900)  # 200 over: one 225-step
    again = fit_ids(list(range(1000)) + list(range(5000, 5120)), 120, 4, 900)
    assert (same.start, same.end) == (again.start, again.end) == (4, 229)
    assert again.token_ids[: len(same.token_ids)] == same.token_ids  # the next prompt extends this one
    # The new prompt (last num_new ids) never goes: at most the whole context goes, and a prompt alone over
    # the budget (or one without context) is left as it is (its answer is clamped to the room left).
    assert fit_ids(ids, 790, 4, 850).token_ids == ids[:4] + ids[-790:]  # a 212-step, 206 droppable
    assert fit_ids(ids, 900, 4, 800).token_ids == ids[:4] + ids[-900:]
    assert fit_ids(ids, 1000, 4, 800) is None
