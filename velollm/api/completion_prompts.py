"""A /v1/completions request's prompts as token ids: text encoded (vLLM's `add_special_tokens`), ids checked
against the vocabulary, and each cut to its last `truncate_prompt_tokens` ids (vLLM's extra) when asked."""

from __future__ import annotations

from typing import Any

from velollm.context.text_ends import text_ends
from velollm.errors import InvalidRequest


def prompt_ids(tokenizer: Any, prompt: str | list[int], vocab_size: int, *, add_special_tokens: bool = True,
               keep_last: int | None = None) -> list[int]:
    """The prompt's ids; with `keep_last`, only its last `keep_last` (vLLM's left truncation). A text too long
    to tokenize whole is read from its ends (velollm.context.text_ends), whose tail holds the ids kept.

    Ids are checked against `vocab_size`, the model's (its embedding rows: what the engine's RequestLimits and
    every other route bound ids by), which may pass the tokenizer's: ids past the tokenizer are padding rows
    that spell no text, taken as vLLM takes them."""
    if isinstance(prompt, list):
        bad = [t for t in prompt if not 0 <= t < vocab_size]
        if bad:
            raise InvalidRequest(f"prompt holds token ids outside the vocabulary (0..{vocab_size - 1}): {bad[:5]}",
                                 param="prompt")
        return list(prompt) if keep_last is None else prompt[-keep_last:]
    if keep_last is None:
        return tokenizer.encode(prompt, add_special_tokens=add_special_tokens)
    ends = text_ends(tokenizer, prompt, keep_last, 0, add_special_tokens)
    return (ends.head_ids + ends.tail_ids)[-keep_last:]
