"""A Tokenizer built from GGUF metadata that splits text exactly as llama.cpp's llama-vocab.cpp does.

`gpt2` vocabularies become a byte-level BPE with llama.cpp's pre-tokenizer regexes; `llama`
vocabularies (SentencePiece) become a BPE whose merges are ranked by the merged piece's score,
with byte fallback and a "▁" prefix on every text fragment (llama.cpp's add_space_prefix).
Control, unknown and user-defined tokens are added tokens matched on the raw text, as llama.cpp
partitions them out before tokenizing (it tokenizes with parse_special=True).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers

from velollm.engine.text.tokenizer import Tokenizer
from velollm.errors import UnsupportedModel

logger = logging.getLogger(__name__)

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# llama.cpp's pre-tokenizer regexes (src/llama-vocab.cpp, llm_tokenizer_bpe), its case-insensitive
# contraction form included, applied one after another as isolating splits.
_CONTRACTIONS = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
LLAMA3_REGEX = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_REGEX = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
DEFAULT_REGEXES = (r"[\p{P}\$\+<=>\^~\|]+", GPT2_REGEX, r"\p{N}+", r"[0-9][0-9][0-9]")

# tokenizer.ggml.pre -> (regexes, ignore_merges, add_bos default), as llama.cpp maps them.
_LLAMA3 = ((LLAMA3_REGEX,), True, True)
_QWEN2 = ((QWEN2_REGEX,), False, False)
_GPT2 = ((GPT2_REGEX,), False, False)
PRE_TOKENIZERS: dict[str, tuple[tuple[str, ...], bool, bool]] = {
    "default": (DEFAULT_REGEXES, False, False),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"), _LLAMA3),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "megrez", "stablelm2"), _QWEN2),
    **dict.fromkeys(("gpt-2", "phi-2", "mpt", "olmo", "jina-es", "jina-de", "jina-v2-es", "jina-v2-de",
                     "exaone4", "mellum"), _GPT2),
}
# Tokens llama.cpp treats as end-of-generation (and control) by their text.
EOG_TEXTS = frozenset({"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
                       "<EOT>", "<|end_of_text|>"})


def check_tokenizer_supported(meta: Mapping[str, Any], where: str = "GGUF") -> None:
    kind = meta.get("tokenizer.ggml.model")
    if kind not in ("gpt2", "llama"):
        raise UnsupportedModel(f"{where}: unsupported tokenizer model {kind!r} (VeloLLM reads 'gpt2' and 'llama')")
    pre = meta.get("tokenizer.ggml.pre") or "default"
    if kind == "gpt2" and pre not in PRE_TOKENIZERS:
        raise UnsupportedModel(f"{where}: unsupported pre-tokenizer {pre!r}; VeloLLM knows {sorted(PRE_TOKENIZERS)}")


def tokenizer_from_gguf(path: str | Path) -> Tokenizer:
    from velollm.engine.loader.gguf_file import GGUFFile

    with GGUFFile(path) as f:
        return tokenizer_from_metadata(f.metadata, where=str(path))


def tokenizer_from_metadata(meta: Mapping[str, Any], where: str = "GGUF") -> Tokenizer:
    """Build the Tokenizer a GGUF file's `tokenizer.*` metadata describes."""
    check_tokenizer_supported(meta, where)
    return build_tokenizer(meta)


def build_tokenizer(meta: Mapping[str, Any]) -> Tokenizer:
    """tokenizer_from_metadata for metadata that check_tokenizer_supported has already passed."""
    tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(meta["tokenizer.ggml.tokens"])]
    types = np.asarray(meta.get("tokenizer.ggml.token_type", np.full(len(tokens), NORMAL)), dtype=np.int64)
    vocab = {t: i for i, t in enumerate(tokens)}  # a duplicate text keeps its last id, as in llama.cpp
    ids = {k: _id(meta, f"tokenizer.ggml.{k}_token_id", len(tokens)) for k in ("bos", "eos", "eot", "eom", "unk", "pad")}
    eog = {i for k in ("eos", "eot", "eom") if (i := ids[k]) is not None}
    eog |= {vocab[t] for t in EOG_TEXTS if t in vocab}
    special_ids = {i for i, t in enumerate(types) if t in (CONTROL, UNKNOWN)} | eog
    if meta["tokenizer.ggml.model"] == "gpt2":
        backend, add_bos_default = _byte_level_bpe(meta, vocab)
    else:
        backend, add_bos_default = _sentencepiece(meta, tokens, types, vocab, ids["unk"]), True
    added = [AddedToken(tokens[i], special=i in special_ids, normalized=False)
             for i in range(len(tokens)) if i in special_ids or types[i] == USER_DEFINED]
    backend.add_special_tokens([t for t in added if t.special])
    backend.add_tokens([t for t in added if not t.special])
    name = {k: tokens[i] for k, i in ids.items() if i is not None}
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", add_bos_default)) and "bos" in name
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False)) and "eos" in name
    return Tokenizer(
        backend,
        chat_template=_chat_templates(meta),
        bos_token=name.get("bos"),
        eos_token=name.get("eos"),
        eos_token_ids=eog,
        add_bos=add_bos,
        add_eos=add_eos,
        special_tokens={f"{k}_token": v for k, v in name.items() if k in ("unk", "pad")},
    )


def _id(meta: Mapping[str, Any], key: str, n: int) -> int | None:
    value = meta.get(key)
    return int(value) if value is not None and 0 <= int(value) < n else None


def _byte_level_bpe(meta: Mapping[str, Any], vocab: dict[str, int]) -> tuple[tokenizers.Tokenizer, bool]:
    pre = meta.get("tokenizer.ggml.pre") or "default"
    regexes, ignore_merges, add_bos = PRE_TOKENIZERS[pre]
    merges = []
    for line in meta.get("tokenizer.ggml.merges", []):
        cut = line.find(" ", 1)  # llama.cpp splits at the first space after the first character
        left, right = line[:cut], line[cut + 1:]
        if cut > 0 and left in vocab and right in vocab and left + right in vocab:
            merges.append((left, right))
    backend = tokenizers.Tokenizer(models.BPE(vocab, merges, ignore_merges=ignore_merges))
    splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes]
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)]
    )
    backend.decoder = decoders.ByteLevel()
    return backend, add_bos


def _sentencepiece(meta: Mapping[str, Any], tokens: list[str], types: np.ndarray, vocab: dict[str, int],
                   unk_id: int | None) -> tokenizers.Tokenizer:
    scores = np.asarray(meta.get("tokenizer.ggml.scores", np.zeros(len(tokens))), dtype=np.float64)
    # llama.cpp merges the adjacent pair whose concatenation has the highest score; a BPE ranks
    # every (left, right) split of a piece by that piece's score to do the same.
    ranked = []
    for i, piece in enumerate(tokens):
        if types[i] in (NORMAL, USER_DEFINED, UNUSED) and vocab.get(piece) == i:
            for cut in range(1, len(piece)):
                if piece[:cut] in vocab and piece[cut:] in vocab:
                    ranked.append((-scores[i], i, cut, piece[:cut], piece[cut:]))
    ranked.sort(key=lambda r: r[:3])
    merges = [(left, right) for *_, left, right in ranked]
    unk = tokens[unk_id] if unk_id is not None else None
    backend = tokenizers.Tokenizer(models.BPE(vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    add_space_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    steps = [normalizers.Prepend("▁")] if add_space_prefix else []
    backend.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])
    decode = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_space_prefix:
        decode.append(decoders.Strip(" ", 1, 0))
    backend.decoder = decoders.Sequence(decode)
    return backend


def _chat_templates(meta: Mapping[str, Any]) -> str | dict[str, str] | None:
    main = meta.get("tokenizer.chat_template")
    prefix = "tokenizer.chat_template."
    named = {k[len(prefix):]: v for k, v in meta.items() if k.startswith(prefix) and isinstance(v, str)}
    if not named:
        return main
    return {**({"default": main} if main else {}), **named}
