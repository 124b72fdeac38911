"""TextOffsets: the `text_offset` of OpenAI completions logprobs, each token's place in the returned text.

vLLM (and OpenAI's own server, as far as its answers show) advance the offset by the length of each token decoded
alone, which drifts once a token holds part of a multi-byte character (it decodes alone to U+FFFD, one character
for each such token where the text has one for all of them), and counts skipped special tokens the text lacks.
Here the offsets come from the text itself, as the engine's incremental detokenizer builds it.

The rule: a token's offset is the length of the text whose characters are complete before it, counted from the
start of the returned text (after an `echo`ed prompt). So a token that begins with whole characters gets the
offset where its own text starts; a token that completes a character begun in earlier tokens gets the offset where
that character starts; a token holding only part of a character, like one that adds no text (a skipped special
token), gets the offset of the text so far; in a SentencePiece byte-fallback run, the characters its bytes completed
count as text so far. Bytes that never complete a character (a random model writes them) are the U+FFFD the text
shows, before the token after them: a SentencePiece decoder writes a run that is not UTF-8 as a whole as one U+FFFD
per byte, all before the token that ends the run (a skipped special token does not: the run goes on after it). Every offset indexes into the returned text, offsets never decrease, and `text[offset]` is
the first character that the token's bytes are part of (when it has one).
"""

from __future__ import annotations

import codecs
import os
from typing import Any

from velollm.api.logprobs import raw_token_bytes

_PARTIAL = "\ufffd"  # what the bytes of an incomplete character decode to


class TextOffsets:
    """Offsets of one choice's tokens, fed in order (a stream's deltas one after the other)."""

    def __init__(self, tokenizer: Any, start: int = 0, skip_special_tokens: bool = True) -> None:
        # Lazily: the API loads no engine module in --proxy-only mode, where no native model answers.
        from velollm.engine.text.detokenizer import IncrementalDetokenizer

        self._tokenizer = tokenizer
        self._skip_special = skip_special_tokens
        self._detokenizer = IncrementalDetokenizer(tokenizer, (), skip_special_tokens)
        self._ids: list[int] = []
        self._held = 0  # the first token whose text the detokenizer holds back (not emitted yet)
        self._emitted = start
        self._pieces: dict[int, bytes | None] = {}

    def offsets(self, token_ids: list[int]) -> list[int]:
        """The offsets of the next tokens of the answer."""
        out = []
        for token_id in token_ids:
            out.append(self._emitted + (self._held_chars_before(token_id) if self._held < len(self._ids) else 0))
            self._ids.append(token_id)
            text = self._detokenizer.step([token_id])
            if text:  # everything up to this token is emitted now
                self._emitted += len(text)
                self._held = len(self._ids)
        return out

    def _held_chars_before(self, token_id: int) -> int:
        """Characters of the text held back (a character split across tokens, a byte-fallback run) that end
        before `token_id`: from the tokens' UTF-8 bytes where the vocabulary spells them (byte-level BPE, byte
        tokens), which also tell bytes that will never complete a character (U+FFFD, before the token that
        shows it) from bytes the token goes on with; else from the held text's decode."""
        pieces = [self._bytes(i) for i in (*self._ids[self._held:], token_id)]
        if self._ends_held(token_id) and (self._tokenizer.byte_fallback_ids or None in pieces):
            # SentencePiece decodes a byte-fallback run whole, an invalid one as a U+FFFD per byte (UTF-8 has one
            # per maximal invalid sequence, and the valid characters between them): the text tells.
            return self._chars_kept_by(token_id)
        if None in pieces:
            return self._complete_held_chars()
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        num_chars = len(decoder.decode(b"".join(pieces[:-1])))  # type: ignore[arg-type]
        token = pieces[-1]
        if not token:
            return num_chars
        first = decoder.decode(token[:1])
        buffered = decoder.getstate()[0]
        return num_chars + len(first) - (0 if buffered else 1)  # a character its first byte ends is not before it

    def _bytes(self, token_id: int) -> bytes | None:
        """The token's bytes in the text, or None where its vocabulary entry does not spell them exactly."""
        if token_id not in self._pieces:
            text = self._decode([token_id])
            raw = raw_token_bytes(self._tokenizer.id_to_token(token_id))
            if not text:  # a skipped special token; a SentencePiece "▁" alone, whose space the decoder strips
                self._pieces[token_id] = None if self._visible(token_id) else b""
            else:
                self._pieces[token_id] = raw if raw is not None and raw.decode("utf-8", "replace") == text else None
        return self._pieces[token_id]

    def _visible(self, token_id: int) -> bool:
        """Whether the token is in the text: a skipped special token or an unknown id vanishes from it."""
        tok = self._tokenizer
        return 0 <= token_id < tok.vocab_size and not (self._skip_special and tok.is_special(token_id))

    def _ends_held(self, token_id: int) -> bool:
        """Whether `token_id` ends what is held: a visible token that is no byte-fallback token (a byte-fallback
        run goes on across the tokens that vanish)."""
        return self._visible(token_id) and token_id not in self._tokenizer.byte_fallback_ids

    def _chars_kept_by(self, token_id: int) -> int:
        """Characters of the held text that `token_id` leaves as they are: all of them before it, U+FFFDs of bytes
        that will never complete a character included (one per byte of an invalid byte-fallback run), except a
        character the token completes (a byte-level vocabulary's token spelled otherwise than its bytes)."""
        context = max(0, self._held - 1)
        before = self._decode(self._ids[context:self._held])
        held = self._decode(self._ids[context:])
        after = self._decode([*self._ids[context:], token_id])
        return max(0, len(os.path.commonprefix([held, after])) - len(before))

    def _complete_held_chars(self) -> int:
        """Characters complete in the text held back: a character split across tokens, a byte-fallback run."""
        held = self._ids[self._held:]
        byte_ids = self._tokenizer.byte_fallback_ids
        first_byte = next((n for n, i in enumerate(held) if i in byte_ids), len(held))
        chars = self._chars_after_emitted(self._held + first_byte)
        if first_byte < len(held):
            # A SentencePiece decoder turns a run of byte tokens that is not valid UTF-8 as a whole (a complete
            # character and the first bytes of the next) into U+FFFD: its complete characters come from its bytes.
            run = b"".join(raw_token_bytes(self._tokenizer.id_to_token(i)) or b"" for i in held[first_byte:]
                           if i in byte_ids)
            chars += len(codecs.getincrementaldecoder("utf-8")("replace").decode(run))
        return chars

    def _chars_after_emitted(self, end: int) -> int:
        """Complete characters of the text of ids[held:end], decoded after one emitted token of context (a
        SentencePiece decoder strips the space of the first token it decodes)."""
        if end == self._held:
            return 0
        context = max(0, self._held - 1)
        before = self._decode(self._ids[context:self._held])
        text = self._decode(self._ids[context:end]).rstrip(_PARTIAL)
        return max(0, len(text) - len(before))

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special)
