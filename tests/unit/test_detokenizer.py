"""Streaming detokenization: the deltas concatenate to the full decode and never show half a character."""

from __future__ import annotations

import random

import pytest

from velollm.engine.text.detokenizer import IncrementalDetokenizer
from velollm.engine.text.tokenizer import Tokenizer

FOLDERS = ["demo", "llama3", "mistral-metaspace", "llama2-normalizer", "qwen2"]

TEXTS = [
    "Hello world, this is a test.",
    " leading space and  double  spaces\n\nnew paragraph",
    "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flag 🇫🇷 and 日本語のテキスト",
    "def f(x):\n    return {'a': x}  # ½ ≠ ∑\n",
    "<|eot_id|>specials<s> inside </s>text<|im_end|>",
]


@pytest.fixture(scope="module")
def tokenizers_by_name(tokenizer_folders) -> dict[str, Tokenizer]:
    return {name: Tokenizer.from_folder(tokenizer_folders[name]) for name in FOLDERS}


def stream(tok: Tokenizer, ids: list[int], rng: random.Random, skip: bool) -> list[str]:
    detok = IncrementalDetokenizer(tok, prompt_ids=[1, 2, 3], skip_special_tokens=skip)
    deltas, i = [], 0
    while i < len(ids):
        n = rng.choice([1, 1, 1, 2, 3])
        deltas.append(detok.step(ids[i : i + n]))
        i += n
    deltas.append(detok.flush())
    return deltas


@pytest.mark.parametrize("name", FOLDERS)
@pytest.mark.parametrize("skip", [True, False])
def test_stream_of_real_text_equals_full_decode(tokenizers_by_name, name, skip):
    tok = tokenizers_by_name[name]
    rng = random.Random(f"{name}{skip}")
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        deltas = stream(tok, ids, rng, skip)
        assert "".join(deltas) == tok.decode(ids, skip_special_tokens=skip)
        assert not any("\ufffd" in d for d in deltas), deltas  # complete text never shows a partial char
        if ids and ids[-1] not in tok.byte_fallback_ids:  # a byte-token run waits for flush()
            assert deltas[-1] == ""  # nothing was left held back


@pytest.mark.parametrize("name", FOLDERS)
@pytest.mark.parametrize("skip", [True, False])
def test_stream_of_random_ids_equals_full_decode(tokenizers_by_name, name, skip):
    tok = tokenizers_by_name[name]
    rng = random.Random(f"random-{name}{skip}")
    for _ in range(150):
        # ids beyond the vocabulary included: models pad their embedding matrix
        ids = [rng.randrange(tok.vocab_size + 8) for _ in range(rng.randrange(1, 40))]
        assert "".join(stream(tok, ids, rng, skip)) == tok.decode(ids, skip_special_tokens=skip), ids


@pytest.mark.parametrize("name", ["demo", "llama3", "qwen2"])
def test_multibyte_character_is_held_back_until_complete(tokenizers_by_name, name):
    tok = tokenizers_by_name[name]
    ids = tok.encode("a😀", add_special_tokens=False)
    assert len(ids) >= 3, "the emoji should span several byte tokens"
    detok = IncrementalDetokenizer(tok, [], skip_special_tokens=True)
    deltas = [detok.step([i]) for i in ids]
    assert deltas[-1].endswith("😀")  # released by the token that completes it
    assert all(d == "" for d in deltas[-3:-1])  # the partial bytes produced nothing yet
    assert "".join(deltas) == "a😀"


def test_byte_fallback_run_is_released_by_the_next_token(tokenizers_by_name):
    tok = tokenizers_by_name["mistral-metaspace"]
    emoji = tok.encode("😀", add_special_tokens=False)
    assert set(emoji[1:]) <= tok.byte_fallback_ids and len(emoji) >= 4
    ids = tok.encode("a😀 ok", add_special_tokens=False)
    detok = IncrementalDetokenizer(tok, [], skip_special_tokens=True)
    deltas = [detok.step([i]) for i in ids]
    assert "".join(deltas) == "a😀 ok"
    first = next(i for i, d in enumerate(deltas) if "😀" in d)
    assert ids[first] not in tok.byte_fallback_ids and ids[first - 1] in tok.byte_fallback_ids
    # a stray continuation byte after a complete run turns the whole run into U+FFFD: never streamed early
    ids = tok.encode("x", add_special_tokens=False) + tok.encode("\x1d", add_special_tokens=False)[-1:]
    ids += [tok.token_to_id("<0x80>"), *tok.encode(" ok", add_special_tokens=False)]
    detok = IncrementalDetokenizer(tok, [], skip_special_tokens=True)
    assert "".join(detok.step([i]) for i in ids) == tok.decode(ids)


def test_flush_releases_an_incomplete_tail(tokenizers_by_name):
    tok = tokenizers_by_name["llama3"]
    ids = tok.encode("ok 😀", add_special_tokens=False)[:-1]  # drop the last byte of the emoji
    detok = IncrementalDetokenizer(tok, [], skip_special_tokens=True)
    streamed = "".join(detok.step([i]) for i in ids)
    assert "\ufffd" not in streamed
    assert streamed + detok.flush() == tok.decode(ids)
    assert tok.decode(ids).endswith("\ufffd")


def test_sentencepiece_spaces_survive_skipped_special_tokens(tokenizers_by_name):
    tok = tokenizers_by_name["mistral-metaspace"]
    words = tok.encode("Hello world again", add_special_tokens=False)
    eos = tok.token_to_id("</s>")
    ids = [words[0], eos, eos, *words[1:]]
    detok = IncrementalDetokenizer(tok, [], skip_special_tokens=True)
    assert "".join(detok.step([i]) for i in ids) == tok.decode(ids) == "Hello world again"


def test_long_generation_keeps_a_short_window(tokenizers_by_name):
    tok = tokenizers_by_name["demo"]
    ids = tok.encode("the river ran quietly past the old mill " * 200, add_special_tokens=False)
    detok = IncrementalDetokenizer(tok, [], skip_special_tokens=True)
    text = "".join(detok.step([i]) for i in ids)
    assert text == tok.decode(ids)
    assert len(detok.token_ids) - detok._prefix_offset < 8  # work per step does not grow with length


class _LigatureTokenizer:
    """A decoder that is not prefix-stable: "f" followed by "i" becomes "ﬁ"."""

    vocab_size = 3
    byte_fallback_ids: frozenset[int] = frozenset()

    def decode(self, ids, skip_special_tokens=True):
        return "".join("xfi"[i] for i in ids).replace("fi", "ﬁ")

    def is_special(self, token_id):
        return False


def test_decoder_that_rewrites_earlier_text_falls_back_to_the_full_decode():
    tok = _LigatureTokenizer()
    detok = IncrementalDetokenizer(tok, [], skip_special_tokens=True)  # type: ignore[arg-type]
    deltas = [detok.step([i]) for i in [0, 1, 2, 0, 0]]
    assert deltas == ["x", "f", "", "x", "x"]  # "fi" arrived as "f" already; later text is not lost
    assert detok.flush() == ""
