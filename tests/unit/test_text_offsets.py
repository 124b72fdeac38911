"""Completions `text_offset` (velollm/api/text_offsets.py): each token's offset is the length of the text complete
before it, so offsets index the returned text exactly, also when tokens split multi-byte characters."""

from __future__ import annotations

import codecs
import random

import pytest

from velollm.api.generation import ChoiceState
from velollm.api.logprobs import raw_token_bytes
from velollm.api.openai_format import CompletionFormatter
from velollm.api.text_offsets import TextOffsets
from velollm.engine.text.tokenizer import Tokenizer
from velollm.outputs import RequestDelta

FOLDERS = ["llama3", "mistral-metaspace", "llama2-normalizer", "qwen2"]
TEXTS = [
    "Hello world, this is a test.",
    "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flag 🇫🇷 and 日本語のテキスト",
    "Grüße aus Köln: ½ ≠ ∑, naïve café; 鬱龘 ᚠᛇᚻ 𓀀 𝔘𝔫𝔦",
    "<|eot_id|>specials<s> inside </s>text<|im_end|>",
]


def expected(tok, ids: list[int], start: int, skip: bool) -> list[int]:
    """The rule from its definition: the text decoded before each token, less a trailing partial character."""
    return [start + len(tok.decode(ids[:k], skip_special_tokens=skip).rstrip("\ufffd")) for k in range(len(ids))]


def by_bytes(tok, ids: list[int], start: int = 0) -> list[int]:
    """The rule on a byte-level vocabulary's UTF-8 bytes: a token's offset counts the characters of the text whose
    last byte comes before the token's first (bytes that never complete a character are one U+FFFD, as decoded)."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    starts, ends, pos = [], [], 0
    for token_id in ids:
        starts.append(pos)
        for byte in raw_token_bytes(tok.id_to_token(token_id)):
            out = decoder.decode(bytes([byte]))
            if out:  # one character at most holds this byte: the last, unless the byte starts a new one
                ends += [pos - 1] * (len(out) - 1) + [pos - 1 if decoder.getstate()[0] else pos]
            pos += 1
    return [start + sum(end < first for end in ends) for first in starts]


@pytest.fixture(scope="module")
def tokenizers(tokenizer_folders, qwen3) -> dict[str, Tokenizer]:
    return {"qwen3": qwen3, **{name: Tokenizer.from_folder(tokenizer_folders[name]) for name in FOLDERS}}


BYTE_LEVEL = ["qwen3", "llama3", "qwen2"]


@pytest.mark.parametrize("name", ["qwen3", *FOLDERS])
@pytest.mark.parametrize("skip", [True, False])
def test_offsets_index_the_returned_text(tokenizers, name, skip):
    tok = tokenizers[name]
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        offsets = TextOffsets(tok, 7, skip)
        got = offsets.offsets(ids[:3]) + offsets.offsets(ids[3:])  # as a stream's deltas come
        returned = tok.decode(ids, skip_special_tokens=skip)
        assert got == sorted(got) and got[-1] <= 7 + len(returned)
        if name in BYTE_LEVEL:  # a prefix decodes to the text so far (a byte-fallback run does not: below)
            assert got == expected(tok, ids, 7, skip), (name, text)


@pytest.mark.parametrize("name", BYTE_LEVEL)
def test_random_ids_bytes_that_never_complete_a_character_count_where_the_text_shows_them(tokenizers, name):
    """A random model writes invalid UTF-8 too: a lead byte followed by no continuation is a U+FFFD in the text,
    before the next token's characters."""
    tok = tokenizers[name]
    rng = random.Random(name)
    vocab = [i for i in range(min(tok.vocab_size, 4000)) if not tok.is_special(i) and tok.id_to_token(i)]
    multibyte = [i for i in vocab if any(b >= 0x80 for b in raw_token_bytes(tok.id_to_token(i)) or b"")]
    for _ in range(200):
        ids = [rng.choice(multibyte if rng.random() < 0.6 else vocab) for _ in range(rng.randrange(1, 24))]
        cut = rng.randrange(len(ids) + 1)
        offsets = TextOffsets(tok, 3)
        assert offsets.offsets(ids[:cut]) + offsets.offsets(ids[cut:]) == by_bytes(tok, ids, 3), ids


def test_a_byte_fallback_run_counts_the_characters_it_completed(tokenizers):
    tok = tokenizers["mistral-metaspace"]
    ids = tok.encode("emoji 😀👍🏽 family", add_special_tokens=False)
    assert sum(i in tok.byte_fallback_ids for i in ids) == 12  # three 4-byte characters
    # "▁" "e" ... "▁", the bytes of 😀, 👍 and 🏽 (each run's bytes at the offset of its character), "▁f" "a" ...
    assert TextOffsets(tok).offsets(ids) == [0, 0, 1, 2, 3, 4, 5, *[6] * 4, *[7] * 4, *[8] * 4, 9, 11, 12, 13, 14, 15]


SENTENCEPIECE = ["mistral-metaspace", "llama2-metaspace-legacy", "llama2-normalizer", "mistral-normalizer"]


def _pieces(tok, *pieces: str) -> list[int]:
    vocab = {tok.id_to_token(i): i for i in range(tok.vocab_size)}
    return [vocab[p] for p in pieces]


@pytest.mark.parametrize("skip", [True, False])
def test_an_invalid_byte_fallback_run_is_before_the_token_that_ends_it(tokenizer_folders, skip):
    """SentencePiece writes a byte-fallback run that is no UTF-8 as one U+FFFD per byte: the token after it starts
    after all of them (it got the offset of the text before the run; "▁" alone decodes to "", and was taken for a
    token without text). The run's tokens keep the offset of the text so far: whether it completes is not known
    while it runs."""
    tok = Tokenizer.from_folder(tokenizer_folders["mistral-metaspace"])
    ids = _pieces(tok, "▁", "a", "<0xE9>", "<0x80>", "▁", "x", "y", "z")
    assert tok.decode(ids, skip_special_tokens=skip) == "a\ufffd\ufffd xyz"
    assert TextOffsets(tok, 0, skip).offsets(ids) == [0, 0, 1, 1, 3, 4, 5, 6]
    # 😀's bytes then a lead byte: the whole run is five U+FFFD (UTF-8 would have read 😀 and one U+FFFD)
    ids = _pieces(tok, "▁", "a", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>", "<0xE9>", "▁", "x")
    assert tok.decode(ids, skip_special_tokens=skip) == "a" + "\ufffd" * 5 + " x"
    assert TextOffsets(tok, 0, skip).offsets(ids) == [0, 0, 1, 1, 1, 1, 2, 6, 7]


@pytest.mark.parametrize("skip", [True, False])
def test_a_partial_character_then_a_special_token_then_a_token_that_does_not_go_on(tokenizer_folders, skip):
    """The special token, skipped, leaves the run open (the offset of the text so far); the token after it ends it,
    after its U+FFFD. Written, the special token ends the run itself."""
    tok = Tokenizer.from_folder(tokenizer_folders["mistral-metaspace"])
    ids = _pieces(tok, "▁", "a", "<0xE9>", "</s>", "▁", "x", "y")
    text = tok.decode(ids, skip_special_tokens=skip)
    offsets = TextOffsets(tok, 0, skip).offsets(ids)
    if skip:
        assert text == "a\ufffd xy" and offsets == [0, 0, 1, 1, 2, 3, 4]
    else:
        assert text == "a\ufffd</s> xy" and offsets == [0, 0, 1, 2, 6, 7, 8]


@pytest.mark.parametrize("name", SENTENCEPIECE)
@pytest.mark.parametrize("skip", [True, False])
def test_random_sentencepiece_ids_each_visible_token_starts_where_its_text_does(tokenizer_folders, name, skip):
    """Random ids (a random model's: invalid byte runs, special tokens between bytes): a visible token that is no
    byte token starts where the text before it ends, so text[offset[i]:offset[i + 1]] is what it added."""
    tok = Tokenizer.from_folder(tokenizer_folders[name])
    rng = random.Random(name)
    high = [i for i in tok.byte_fallback_ids if raw_token_bytes(tok.id_to_token(i))[0] >= 0x80]
    specials = [i for i in range(tok.vocab_size) if tok.is_special(i)]
    words = [i for i in range(tok.vocab_size) if not tok.is_special(i) and i not in tok.byte_fallback_ids]
    for _ in range(150):
        ids = [rng.choice(high if r < 0.5 else specials if r < 0.6 else words)
               for r in (rng.random() for _ in range(rng.randrange(2, 14)))]
        cut = rng.randrange(len(ids) + 1)
        offsets = TextOffsets(tok, 0, skip)
        got = offsets.offsets(ids[:cut]) + offsets.offsets(ids[cut:])
        text = tok.decode(ids, skip_special_tokens=skip)
        assert got == sorted(got) and got[-1] <= len(text)
        for i in range(1, len(ids)):
            before = tok.decode(ids[:i], skip_special_tokens=skip)
            if ids[i] in tok.byte_fallback_ids or (skip and tok.is_special(ids[i])) or not text.startswith(before):
                continue
            assert got[i] == len(before), ([tok.id_to_token(t) for t in ids], i, text, got)


def test_a_split_character_gets_the_offset_where_it_starts(qwen3):
    ids = qwen3.encode("a鬱 ᚠᛇᚻ!", add_special_tokens=False)
    assert [qwen3.id_to_token(i) for i in ids] == ["a", "é¬", "±", "Ġá", "ļ", "ł", "áĽ", "ĩ", "áļ", "»", "!"]
    # 鬱: its first bytes (1) and the token completing it (1); " ᚠ": the space's token at 2, the rest of ᚠ
    # at 3 (the text so far, then where ᚠ starts); ᛇ and ᚻ likewise; "!" after them all
    assert TextOffsets(qwen3).offsets(ids) == [0, 1, 1, 2, 3, 3, 4, 4, 5, 5, 6]


def _formatter(tok, echo: str | None = None) -> CompletionFormatter:
    return CompletionFormatter("cmpl-1", "m", 0, tok, 1, False, False, [1], want_logprobs=True,
                               echo_texts=[echo] if echo is not None else None, n=1)


@pytest.mark.parametrize("echo", [None, "Say: "])
def test_completions_logprobs_whole_and_streamed(qwen3, echo):
    """What /v1/completions returns: the same offsets in one body and across a stream's chunks, from the echo's
    end; the sum of the tokens' own lengths would drift past the text (U+FFFD for each partial token)."""
    ids = qwen3.encode("café 鬱 ᚠᛇᚻ 😀 ok", add_special_tokens=False)
    lps = [{i: -0.5} for i in ids]
    text = qwen3.decode(ids)
    start = len(echo or "")
    choice = ChoiceState(0, text=text, token_ids=ids, logprobs=lps, finish_reason="length")
    whole = _formatter(qwen3, echo).response([choice])["choices"][0]
    assert whole["text"] == (echo or "") + text
    assert whole["logprobs"]["text_offset"] == expected(qwen3, ids, start, True)
    assert sum(len(t) for t in whole["logprobs"]["tokens"]) > len(text)  # what the old rule added up
    fmt, streamed = _formatter(qwen3, echo), []
    for i in range(0, len(ids), 2):
        delta = RequestDelta("r", text="", token_ids=ids[i:i + 2], logprobs=lps[i:i + 2])
        for chunk in fmt.stream_chunks(0, delta, [choice]):
            streamed += chunk["choices"][0]["logprobs"]["text_offset"]
    assert streamed == whole["logprobs"]["text_offset"]
