"""The tokenizer as xgrammar sees it: TokenizerInfo and per-token byte facts for the masks."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from velollm.engine.text.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

# Special tokens that stand for tool-call markers: the grammar may produce them (a model emits
# its own marker token, not the marker spelled out), so requests with tools must be detokenized
# with skip_special_tokens=False.
TOOL_MARKER_TOKENS = frozenset({"<tool_call>", "</tool_call>", "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "<|python_tag|>"})


def build_tokenizer_info(tokenizer: Tokenizer, vocab_size: int, stop_token_ids: Iterable[int] | None = None) -> Any:
    """xgrammar TokenizerInfo for `tokenizer`, sized to the model's lm_head (`vocab_size`).

    Special tokens other than the stop tokens and tool markers get an empty string: xgrammar then
    never allows them inside the grammar, which matters because detokenization skips them (the
    text the client sees would differ from the text the grammar accepted).
    """
    import xgrammar as xgr

    backend = tokenizer.backend
    vocab = backend.get_vocab(with_added_tokens=True)
    stops = tokenizer.eos_token_ids if stop_token_ids is None else stop_token_ids
    stop_ids = sorted(i for i in set(stops) if 0 <= i < vocab_size)
    markers = {i for t, i in vocab.items() if t in TOOL_MARKER_TOKENS}
    special = set(tokenizer.special_ids) - set(stop_ids) - markers
    encoded = [""] * vocab_size
    for token, token_id in vocab.items():
        if token_id < vocab_size and token_id not in special:
            encoded[token_id] = token
    try:
        meta = xgr.TokenizerInfo._detect_metadata_from_hf(backend.to_str())
        vocab_type, add_prefix_space = meta["vocab_type"], meta["add_prefix_space"]
    except Exception as e:  # noqa: BLE001 (a private xgrammar helper: fall back to the vocabulary evidence below)
        logger.debug("xgrammar metadata detection failed: %s", e)
        vocab_type, add_prefix_space = xgr.VocabType.RAW, False
    by_vocab = (
        xgr.TokenizerInfo._detect_vocab_type_from_vocab(vocab)
        if hasattr(xgr.TokenizerInfo, "_detect_vocab_type_from_vocab")
        else None
    )
    if by_vocab is not None and by_vocab != vocab_type:
        vocab_type = by_vocab
        add_prefix_space = by_vocab == xgr.VocabType.BYTE_FALLBACK and _prepends_space(tokenizer)
    return xgr.TokenizerInfo(
        encoded, vocab_type, vocab_size=vocab_size, stop_token_ids=stop_ids or None, add_prefix_space=add_prefix_space
    )


def _prepends_space(tokenizer: Tokenizer) -> bool:
    ids = tokenizer.encode("a", add_special_tokens=False)
    piece = tokenizer.id_to_token(ids[0]) if ids else None
    return bool(piece) and piece.startswith("▁")  # type: ignore[union-attr]


def _pack(bits: np.ndarray) -> torch.Tensor:
    # xgrammar's layout: bit j of int32 word i is token 32*i + j.
    padded = np.zeros((len(bits) + 31) // 32 * 32, dtype=bool)
    padded[: len(bits)] = bits
    return torch.from_numpy(np.packbits(padded, bitorder="little").view("<i4").copy())


def starts_with_bitmask(token_bytes: list[bytes], prefixes: tuple[bytes, ...]) -> torch.Tensor:
    """A bitmask row of the tokens whose bytes start with one of `prefixes`."""
    return _pack(np.array([data.startswith(prefixes) for data in token_bytes], dtype=bool))


def ids_bitmask(token_ids: list[int], vocab_size: int) -> torch.Tensor:
    """A bitmask row of `token_ids`."""
    bits = np.zeros(vocab_size, dtype=bool)
    bits[[i for i in token_ids if 0 <= i < vocab_size]] = True
    return _pack(bits)
