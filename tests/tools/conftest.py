"""Shared fixtures: a tiny byte-level BPE tokenizer trained in-process (no downloads)."""

from __future__ import annotations

import json
import random

import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from velollm.engine.text.tokenizer import Tokenizer

SPECIALS = ["<eos>", "<|start|>", "<tool_call>", "</tool_call>"]


def _corpus() -> list[str]:
    rng = random.Random(0)
    words = [
        "name",
        "arguments",
        "city",
        "Paris",
        "true",
        "false",
        "null",
        "items",
        "value",
        "2024-05-01",
        "user@example.com",
    ]
    lines = []
    for _ in range(300):
        obj = {
            rng.choice(words): rng.choice(
                [rng.randint(-999, 9999), rng.choice(words), rng.random(), [1, 2], {"a": "b c"}]
            )
        }
        lines.append(json.dumps(obj))
        lines.append(" ".join(rng.choice(words) for _ in range(8)))
    return lines


def make_byte_bpe() -> Tokenizer:
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_corpus(), trainer)
    return Tokenizer(backend, eos_token="<eos>")


@pytest.fixture(scope="session")
def byte_bpe() -> Tokenizer:
    return make_byte_bpe()


def make_sentencepiece_bpe() -> Tokenizer:
    """A Llama-2/Mistral-style tokenizer: Metaspace pieces with <0xNN> byte-fallback pieces in the
    vocabulary (not added tokens, as in the real ones)."""
    from tokenizers import normalizers

    trained = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    trained.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    trained.train_from_iterator(_corpus(), trainer)
    spec = json.loads(trained.to_str())
    vocab = dict(spec["model"]["vocab"])
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["model"]["merges"]]
    backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>"))
    backend.normalizer = trained.normalizer
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    backend.add_special_tokens(["<unk>", "<s>", "</s>", "[TOOL_CALLS]"])
    return Tokenizer(backend, bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="session")
def sp_bpe() -> Tokenizer:
    return make_sentencepiece_bpe()
