"""GGUF tokenizers split text exactly as llama.cpp does (byte-level BPE per pre-tokenizer, SentencePiece)."""

from __future__ import annotations

import pytest

from .tiny_gguf import BPE_SPECIALS, CHAT_TEMPLATE, USER_DEFINED, VARIED_TEXT

from velollm.engine.loader.gguf_tokenizer import tokenizer_from_gguf

KINDS = ("llama-bpe", "qwen2", "gpt-2", "default", "spm")
TEXTS = (
    VARIED_TEXT,
    "",
    " ",
    "   leading spaces",
    "\n\n\nnewlines first",
    "🦙",
    "Hello",
    "a  b   c    ",
    "<|eot_id|>",
    "[INST]hi[/INST] <s> x</s>",
    "I'M sure they'RE here: 'S 'll 've 'd",
    "x = [1,2,3]; y = {'k': \"v\"}  // comment\n\t\tindent",
    "12345678901234567890 and 3.141592653589793",
    "ÀÉÎÕÜ àéîõü ß ﬁ Ⅻ ① ",
    "<|im_start|><|im_end|><|im_start|>",
)


@pytest.mark.parametrize("kind", KINDS)
def test_tokenization_matches_llama_cpp(fixtures, kind):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    path = fixtures.vocab_model(kind)
    ours = tokenizer_from_gguf(path)
    ref = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    for text in TEXTS:
        for add_bos in (True, False):
            expected = ref.tokenize(text.encode(), add_bos=add_bos, special=True)
            assert ours.encode(text, add_special_tokens=add_bos) == expected, (text, add_bos)


@pytest.mark.parametrize("kind", ["llama-bpe", "qwen2"])
def test_byte_level_special_tokens_and_metadata(fixtures, kind):
    tok = fixtures.tokenizer(kind)
    ours = tokenizer_from_gguf(fixtures.vocab_model(kind))
    ids = {t: tok.tokens.index(t) for t in (*BPE_SPECIALS, *USER_DEFINED)}
    # Control and user-defined tokens are never split from the text.
    assert ours.encode("a<|im_end|>b<tool_call>", add_special_tokens=False)[1] == ids["<|im_end|>"]
    assert ids["<tool_call>"] in ours.encode("a<tool_call>", add_special_tokens=False)
    assert ours.is_special(ids["<|eot_id|>"]) and not ours.is_special(ids["<tool_call>"])
    # llama.cpp's end-of-generation set: eos plus eot-looking tokens.
    assert {ids["<|end_of_text|>"], ids["<|eot_id|>"], ids["<|im_end|>"]} <= ours.eos_token_ids
    assert (ours.encode("hi")[0] == ids["<|begin_of_text|>"]) == (kind == "llama-bpe")
    assert ours.chat_template == CHAT_TEMPLATE
    text = ours.apply_chat_template([{"role": "user", "content": "hi"}])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    round_trip = "Hello wörld 🦙\n  x"
    assert ours.decode(ours.encode(round_trip, add_special_tokens=False)) == round_trip


def test_sentencepiece_metadata(fixtures):
    ours = tokenizer_from_gguf(fixtures.vocab_model("spm"))
    ids = ours.encode("Hello 🦙")
    assert ids[0] == 1 and ours.bos_token_id == 1 and 2 in ours.eos_token_ids
    assert any(ours.id_to_token(i).startswith("<0x") for i in ids)  # the emoji falls back to bytes
    assert ours.decode(ids) == "Hello 🦙"


@pytest.mark.parametrize("kind", KINDS)
def test_big_texts_encode_the_same_in_the_worker_process(fixtures, kind):
    from velollm.engine.text.tokenizer import BIG_TEXT_CHARS

    tok = tokenizer_from_gguf(fixtures.vocab_model(kind))
    try:
        text = "".join(TEXTS) * (BIG_TEXT_CHARS // len("".join(TEXTS)) + 1)
        assert len(text) > BIG_TEXT_CHARS
        for special in (True, False):
            assert tok.encode(text, add_special_tokens=special) == \
                tok.backend.encode(text, add_special_tokens=special).ids
        for sample in TEXTS:
            assert len(tok.backend.encode(sample).ids) * tok.max_token_chars >= len(sample)
    finally:
        tok.close()
