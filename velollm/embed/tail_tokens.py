"""Texts encoded to their last k tokens, the model's special tokens kept: vLLM's `truncate_prompt_tokens` on
embeddings (left truncation; k counts the special tokens, as vLLM's tokenizer call with max_length k does)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from velollm.errors import InvalidRequest


def untruncated(tokenizer: Any) -> Any:
    """A copy of a `tokenizers.Tokenizer` without its truncation: the shared one cuts at max_tokens from the
    right, and truncation is the tokenizer's state, so a request's own cut cannot be set on it."""
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_truncation()
    return copy


def tail_ids(tokenizer: Any, texts: Sequence[str], keep_last: int, add_special_tokens: bool,
             max_input_chars: int) -> list[list[int]]:
    """Each text's last `keep_last` ids, special tokens included. `tokenizer` truncates nothing (untruncated);
    each text is read from its last `max_input_chars` characters, which hold more tokens than any k kept."""
    num_special = tokenizer.num_special_tokens_to_add(False) if add_special_tokens else 0
    room = keep_last - num_special
    if room < 1:
        raise InvalidRequest(f"truncate_prompt_tokens {keep_last} leaves no room for text beside the model's "
                             f"{num_special} special tokens", param="truncate_prompt_tokens")
    encodings = tokenizer.encode_batch([text[-max_input_chars:] for text in texts], add_special_tokens=False)
    out = []
    for enc in encodings:
        enc.truncate(room, direction="left")
        out.append(tokenizer.post_process(enc, add_special_tokens=add_special_tokens).ids)
    return out
