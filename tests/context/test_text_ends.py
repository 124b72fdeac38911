"""text_ends: Ollama's cut of a text too long to tokenize, from its ends, against the cut of its whole ids."""

from __future__ import annotations

import random

import pytest

from velollm.context.text_ends import cut_text, text_ends
from velollm.context.token_cut import ollama_cut
from velollm.errors import ContextOverflow

WORDS = ["the", "river", "ran", "quietly", "past", "old", "mill", "where", "miller", "counted", "sacks", "of", "grain,",
         "and", "42", "birds", "sang."]


@pytest.fixture(scope="module")
def tokenizers():
    """The demo tokenizer twice: one refusing texts over a 64-token context by their length, one not."""
    from velollm.engine.loader.demo import ensure_demo
    from velollm.engine.text.tokenizer import Tokenizer

    limited, whole = Tokenizer.from_folder(ensure_demo()), Tokenizer.from_folder(ensure_demo())
    limited.max_input_tokens = 64
    return limited, whole


def text(seed: int, num_words: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(num_words))


@pytest.mark.parametrize("seed,num_words,limit,num_keep", [
    (0, 20_000, 56, 4), (1, 20_000, 56, 0), (2, 20_000, 56, -1), (3, 20_000, 63, 10), (4, 20_000, 1, 4),
    (5, 3_000, 56, 4), (6, 3_000, 32, -1), (7, 50_000, 40, 39),
])
def test_cut_from_the_ends_is_the_cut_of_the_whole(tokenizers, seed, num_words, limit, num_keep):
    limited, whole_tokenizer = tokenizers
    sample = text(seed, num_words)
    with pytest.raises(ContextOverflow):
        limited.encode(sample)  # refused by its length: the case text_ends is for
    whole = whole_tokenizer.encode(sample)
    expected = ollama_cut(len(whole), limit, num_keep)
    ids, cut, num_ids = cut_text(limited, sample, limit, num_keep, add_special_tokens=True, context_len=64)
    assert ids == expected.apply(whole) and cut.keep == expected.keep
    # estimated from the ends: a few per cent off on random words
    assert abs(num_ids - len(whole)) <= len(whole) // 20 and abs(cut.end - expected.end) <= len(whole) // 20
    ends = text_ends(limited, sample, limit, num_keep, True)
    assert ends.meet == (ends.num_ids == len(ends.head_ids) + len(ends.tail_ids) == len(whole))


def test_a_prefix_keeps_its_ids_and_the_text_loses_its_bos(tokenizers):
    limited, whole_tokenizer = tokenizers
    sample = text(8, 20_000)
    prefix = [5, 6, 7]
    whole = prefix + whole_tokenizer.encode(sample, add_special_tokens=False)
    for num_keep in (2, 5, -1):
        expected = ollama_cut(len(whole), 56, num_keep)
        ids, cut, _ = cut_text(limited, sample, 56, num_keep, add_special_tokens=True, context_len=64,
                               prefix_ids=prefix)
        assert ids == expected.apply(whole) and cut.keep == expected.keep


def test_a_prompt_too_long_to_tokenize_is_rendered_once_per_fitting(tokenizers):
    """A chat whose tools alone are over the context (a few dozen tool schemas in a 1024-token context): the
    prompt is too long to tokenize however many turns go, so each step of the fitting (the count of the whole,
    truncation's counts, the cut from the ends, the report's estimate) meets the same prompts again. Each is
    rendered once (one render of a prompt with many tools takes a good part of a second); the fitted prompt
    is the cut from the ends of the kept messages' prompt, as before."""
    from velollm.context.fitter import ContextFitter

    limited, _ = tokenizers
    tools_block = text(8, 20_000)
    renders: list[tuple[int, ...]] = []

    def render(messages):
        renders.append(tuple(map(id, messages)))
        return tools_block + "".join(f"\n<{m['role']}>{m['content']}" for m in messages)

    messages = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "an answer"},
                {"role": "user", "content": "second"}]
    fitted = ContextFitter(render, limited).fit(messages, "truncate", 64, 8, None, 4, True)
    assert fitted.report is not None and fitted.report.dropped_messages == [0, 1]
    assert fitted.messages == messages[2:]
    expected, cut, _ = cut_text(limited, render(messages[2:]), 56, 4, add_special_tokens=False, context_len=64)
    assert fitted.token_ids == expected and fitted.cut == cut
    assert len(renders[:-1]) == len(set(renders[:-1])) <= 3  # each prompt once: the whole, the kept part
