"""Tokenizers for GGUF encoders: `bert` (WordPiece, llama.cpp's WPM) and `t5` (SentencePiece unigram, UGM).

llama.cpp's converter stores a BERT vocabulary in "phantom space" form: a word-initial piece gets a
"▁" prefix and a continuation piece loses its "##"; the form is undone here so that a Hugging Face
WordPiece with BERT's normaliser (lower case, accents stripped, CJK split) tokenizes as llama.cpp does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import tokenizers
from tokenizers import AddedToken, Regex, models, normalizers, pre_tokenizers, processors

from velollm.errors import UnsupportedModel

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
TOKENIZER_MODELS = ("bert", "t5")


def gguf_embedding_tokenizer(meta: Mapping[str, Any], max_tokens: int, where: str = "GGUF") -> tokenizers.Tokenizer:
    """The tokenizer of a GGUF encoder, adding its special tokens and truncating to `max_tokens`."""
    kind = meta.get("tokenizer.ggml.model")
    tokens = list(meta["tokenizer.ggml.tokens"])
    types = np.asarray(meta.get("tokenizer.ggml.token_type", np.full(len(tokens), NORMAL)), dtype=np.int64)
    if kind == "bert":
        backend = _wordpiece(meta, tokens, types)
    elif kind == "t5":
        backend = _unigram(meta, tokens, types)
    else:
        raise UnsupportedModel(f"{where}: tokenizer model {kind!r} is not supported for embeddings "
                               f"(VeloLLM reads {TOKENIZER_MODELS})")
    special = [AddedToken(tokens[i], special=True, normalized=False)
               for i in range(len(tokens)) if types[i] in (CONTROL, UNKNOWN)]
    backend.add_special_tokens(special)
    backend.post_processor = _template(meta, tokens, kind)
    backend.enable_truncation(max_tokens)
    return backend


def _id(meta: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        if meta.get(key) is not None:
            return int(meta[key])
    return None


def _template(meta: Mapping[str, Any], tokens: list[str], kind: str) -> processors.TemplateProcessing:
    start = _id(meta, "tokenizer.ggml.cls_token_id", "tokenizer.ggml.bos_token_id")
    end = _id(meta, "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.eos_token_id")
    add_start = bool(meta.get("tokenizer.ggml.add_bos_token", kind == "bert"))
    add_end = bool(meta.get("tokenizer.ggml.add_sep_token", meta.get("tokenizer.ggml.add_eos_token", True)))
    pieces, special = ["$A:0"], []
    if add_start and start is not None:
        pieces.insert(0, f"{tokens[start]}:0")
        special.append((tokens[start], start))
    if add_end and end is not None:
        pieces.append(f"{tokens[end]}:0")
        special.append((tokens[end], end))
    return processors.TemplateProcessing(single=" ".join(pieces), special_tokens=list(dict.fromkeys(special)))


def _wordpiece(meta: Mapping[str, Any], tokens: list[str], types: np.ndarray) -> tokenizers.Tokenizer:
    vocab: dict[str, int] = {}
    for i, token in enumerate(tokens):
        if token.startswith("\u2581"):
            piece = token[1:]
        elif types[i] in (CONTROL, UNKNOWN, USER_DEFINED) or (token.startswith("[") and token.endswith("]")):
            piece = token
        else:
            piece = "##" + token
        vocab.setdefault(piece, i)
    unk_id = _id(meta, "tokenizer.ggml.unknown_token_id")
    unk = tokens[unk_id] if unk_id is not None else "[UNK]"
    backend = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return backend


def _unigram(meta: Mapping[str, Any], tokens: list[str], types: np.ndarray) -> tokenizers.Tokenizer:
    scores = np.asarray(meta.get("tokenizer.ggml.scores", np.zeros(len(tokens))), dtype=np.float64)
    unk_id = _id(meta, "tokenizer.ggml.unknown_token_id")
    backend = tokenizers.Tokenizer(models.Unigram([(t, float(s)) for t, s in zip(tokens, scores)], unk_id, False))
    steps = []
    charsmap = meta.get("tokenizer.ggml.precompiled_charsmap")
    if charsmap is not None and len(charsmap):
        steps.append(normalizers.Precompiled(np.asarray(charsmap, dtype=np.uint8).tobytes()))
    if meta.get("tokenizer.ggml.remove_extra_whitespaces", True):  # SentencePiece's: runs, leading, trailing
        steps += [normalizers.Replace(Regex(" {2,}"), " "), normalizers.Strip(left=True, right=True)]
    if steps:
        backend.normalizer = normalizers.Sequence(steps)
    prefix = "always" if meta.get("tokenizer.ggml.add_space_prefix", True) else "never"
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=prefix)
    return backend
