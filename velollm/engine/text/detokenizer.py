"""Incremental detokenization: text deltas per step whose concatenation equals a full decode.

Each step decodes a short window of ids twice, with and without the newest tokens, and emits the
difference (vLLM's prefix/read offsets). Decoders that strip a leading space (SentencePiece's
`Strip`/`Metaspace`) treat the window's first token as the text start, so the window always
begins with tokens that produced text; then the stripped space belongs to the shared prefix and
cancels out. Text ending in U+FFFD is an incomplete UTF-8 sequence (a multi-byte character split
across tokens) and is held back until a later token completes it. SentencePiece byte-fallback
tokens decode a whole run at once (an invalid run turns entirely into U+FFFD), so text is also
held back while the newest visible token is a byte token (flush() releases it at the end).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from velollm.engine.text.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """Turns the generated ids of one request into text deltas.

    The concatenation of every `step()` result plus `flush()` equals
    `tokenizer.decode(generated_ids, skip_special_tokens)`. `prompt_ids` is accepted for the
    vLLM-shaped constructor but does not change the text: output is the decode of generated ids only.
    """

    def __init__(
        self, tokenizer: Tokenizer, prompt_ids: Sequence[int] = (), skip_special_tokens: bool = True
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special_tokens
        self._byte_ids = tokenizer.byte_fallback_ids
        self.token_ids: list[int] = []
        self._prefix_offset = 0  # window start: tokens whose text is already emitted, kept as context
        self._read_offset = 0  # tokens before this are emitted
        self._num_emitted_chars = 0

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special)

    def step(self, new_ids: Sequence[int]) -> str:
        """Add newly generated ids; return the text that is now final (possibly "")."""
        if not new_ids:
            return ""
        self.token_ids.extend(new_ids)
        ids = self.token_ids
        if self._byte_ids and self._last_visible_id() in self._byte_ids:
            return ""
        prefix_text = self._decode(ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(ids[self._prefix_offset :])
        if new_text.endswith(REPLACEMENT_CHAR):
            return ""
        if not new_text.startswith(prefix_text):
            return self._resync()
        delta = new_text[len(prefix_text) :]
        # The window may start at the new tokens only if they produced text (see the module docstring).
        if delta:
            self._prefix_offset = self._read_offset
        self._read_offset = len(ids)
        return self._emit(delta)

    def _last_visible_id(self) -> int | None:
        # Skipped special tokens and unknown ids vanish from the decode, so the byte run they
        # interrupt continues on the other side.
        tok = self._tokenizer
        for token_id in reversed(self.token_ids):
            if 0 <= token_id < tok.vocab_size and not (self._skip_special and tok.is_special(token_id)):
                return token_id
        return None

    def flush(self) -> str:
        """At the end of a request: whatever is still held back (a trailing U+FFFD included)."""
        if self._read_offset == len(self.token_ids):
            return ""
        return self._resync()

    def _resync(self) -> str:
        # Fallback for decoders whose window decode is not prefix-stable: diff against a full decode.
        # The window start stays put: it still begins with tokens that produced text.
        full = self._decode(self.token_ids)
        self._read_offset = len(self.token_ids)
        return self._emit(full[self._num_emitted_chars :])

    def _emit(self, delta: str) -> str:
        self._num_emitted_chars += len(delta)
        return delta
