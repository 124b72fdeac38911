"""SegmentEncoder: a rendered chat tokenized one template segment at a time, each distinct segment once.

A chat template writes each message between added tokens (`<|start_header_id|>`, `<|im_start|>`,
`<|eot_id|>`). A Hugging Face tokenizer cuts its input at its added tokens before normalizing, pre-tokenizing
or running the model, so the text from one added token to the next is tokenized on its own: cut just before
each added token, the pieces' ids put together are the whole text's ids. The prompts one fitting compares
(the history before and after each compression step, the cuts truncation tries, the same again with more
room for the summary) are made of the same messages, so they share almost all of their segments, and only
the segments not seen yet are tokenized. Added tokens that take in the spaces beside them (lstrip,
single_word) or that match normalized text are not cut at. New segments go to the tokenizer in one
`encode_batch`, which (unlike `encode`) releases the GIL, so a big history needs no EncodeWorker here; a
text the tokenizer would refuse by its length alone still goes to `tokenizer.encode`, which refuses it.
"""

from __future__ import annotations

import re
from typing import Any


def segment_markers(tokenizer: Any) -> list[str]:
    """The added tokens a text may be cut before ([] when the tokenizer does not list its added tokens)."""
    decoder = getattr(getattr(tokenizer, "backend", None), "get_added_tokens_decoder", None)
    if decoder is None:
        return []
    return [t.content for t in decoder().values()
            if t.content and not t.normalized and not t.lstrip and not t.single_word]


class SegmentEncoder:
    """`encode(text)` as the tokenizer's, from remembered segments (one per fitting)."""

    def __init__(self, tokenizer: Any, markers: list[str]) -> None:
        self.tokenizer = tokenizer
        self.markers = markers
        self._split: re.Pattern[str] | None = None
        self._ids: dict[str, list[int]] = {}

    @classmethod
    def of(cls, tokenizer: Any) -> SegmentEncoder | None:
        """None for a tokenizer without added tokens to cut at."""
        markers = segment_markers(tokenizer)
        return cls(tokenizer, markers) if markers else None

    def segments(self, text: str) -> list[str]:
        if self._split is None:  # the markers the template writes (a vocabulary can have hundreds)
            present = sorted((m for m in self.markers if m in text), key=len, reverse=True)
            self._split = re.compile("(?=" + "|".join(map(re.escape, present)) + ")") if present else re.compile("$^")
        return self._split.split(text)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        limit = getattr(self.tokenizer, "max_input_chars", 0)
        if add_special_tokens or 0 < limit < len(text):
            return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)  # refused by length there
        segments = self.segments(text)
        self._learn(segments)
        return [i for s in segments for i in self._ids[s]]

    def _learn(self, segments: list[str]) -> None:
        new = [s for s in dict.fromkeys(segments) if s not in self._ids]
        if not new:
            return
        backend = getattr(self.tokenizer, "backend", None)
        if backend is not None and hasattr(backend, "encode_batch"):
            encoded = [e.ids for e in backend.encode_batch(new, add_special_tokens=False)]
        else:
            encoded = [self.tokenizer.encode(s, add_special_tokens=False) for s in new]
        self._ids.update(zip(new, encoded))
