"""TurnCache: the token ids the engine ran for recent conversations, so the next turn's prompt reuses them.

The next turn of a chat renders the whole history again, the previous answer included. Tokenizing that
text afresh can give other ids than the ones the model generated (a word split differently, bytes of an
incomplete character, a special token written as text), and the prefix cache, which matches ids, then
misses from that point on. Each finished answer is remembered as (prompt text + answer text -> prompt
ids + generated ids); a new prompt whose text starts with a remembered text starts with its ids, and
only the rest is tokenized. The prompt alone is remembered too, so an answer the client changed still
reuses everything before it.
"""

from __future__ import annotations

import hashlib
import threading
from array import array
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_TAIL = 64  # characters compared before a candidate's prefix is hashed
MAX_IDS = 8 << 20  # ids remembered per model, all entries together: 32 MiB


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


@dataclass(frozen=True)
class Encoded:
    token_ids: list[int]
    num_reused: int  # leading ids taken from a remembered turn


class TurnCache:
    """Remembered (text -> token ids) pairs, least recently used dropped beyond `capacity` entries or
    `max_ids` ids in all (long-context chats: 256 prompts of 128k tokens would be 128 MiB of ids).

    Ids are kept as 4-byte arrays; a lookup checks each candidate's last characters before hashing."""

    def __init__(self, capacity: int = 256, min_chars: int = 64, max_ids: int = MAX_IDS) -> None:
        self.capacity = capacity
        self.max_ids = max_ids
        self.min_chars = min_chars  # shorter texts are cheaper to tokenize than to look up
        self._entries: OrderedDict[tuple[int, bytes], tuple[str, array]] = OrderedDict()  # -> (tail, ids)
        self._lengths: Counter[int] = Counter()
        self._num_ids = 0
        self._lock = threading.Lock()  # prompts are encoded in worker threads

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def num_ids(self) -> int:
        return self._num_ids

    def remember(self, text: str, token_ids: Sequence[int]) -> None:
        if len(text) < self.min_chars or not token_ids or len(token_ids) > self.max_ids:
            return
        key = (len(text), _digest(text))
        ids = array("i", token_ids)  # 4 bytes an id: vocabularies are far below 2**31
        with self._lock:
            old = self._entries.get(key)
            if old is None:
                self._lengths[key[0]] += 1
            else:
                self._num_ids -= len(old[1])
            self._entries[key] = (text[-_TAIL:], ids)
            self._num_ids += len(ids)
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity or self._num_ids > self.max_ids:
                (length, _), (_, dropped) = self._entries.popitem(last=False)
                self._num_ids -= len(dropped)
                self._lengths[length] -= 1
                if not self._lengths[length]:
                    del self._lengths[length]

    def remember_turn(self, tokenizer: Any, prompt_text: str, prompt_ids: Sequence[int],
                      output_ids: Sequence[int]) -> None:
        """A finished answer: the prompt, and the prompt followed by the answer's ids (special tokens
        such as the end-of-turn token included, as the template writes them into the next prompt)."""
        self.remember(prompt_text, prompt_ids)
        if output_ids:
            answer = tokenizer.decode(list(output_ids), skip_special_tokens=False)
            self.remember(prompt_text + answer, list(prompt_ids) + list(output_ids))

    def longest_prefix(self, text: str) -> tuple[int, array] | None:
        """(characters, ids) of the longest remembered text that `text` starts with."""
        with self._lock:
            lengths = sorted((n for n in self._lengths if n <= len(text)), reverse=True)
            tails = {}
            for (n, digest), (tail, _) in self._entries.items():
                tails.setdefault(n, []).append((tail, digest))
        for n in lengths:
            candidates = [digest for tail, digest in tails.get(n, ()) if text.startswith(tail, n - len(tail))]
            if not candidates:
                continue
            digest = _digest(text[:n])
            if digest in candidates:
                with self._lock:
                    entry = self._entries.get((n, digest))
                    if entry is not None:
                        self._entries.move_to_end((n, digest))
                        return n, entry[1]
        return None

    def encode(self, tokenizer: Any, text: str) -> Encoded:
        """`text`'s ids: a remembered prefix's ids, then the rest tokenized (no special tokens added)."""
        hit = self.longest_prefix(text) if len(text) >= self.min_chars else None
        if hit is None:
            return Encoded(tokenizer.encode(text, add_special_tokens=False), 0)
        num_chars, ids = hit
        rest = text[num_chars:]
        tail = tokenizer.encode(rest, add_special_tokens=False) if rest else []
        return Encoded(ids.tolist() + tail, len(ids))
