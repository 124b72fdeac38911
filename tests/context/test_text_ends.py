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
