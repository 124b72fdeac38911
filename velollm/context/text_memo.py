"""TextMemo: str -> str answers remembered, least recently used dropped beyond a number of entries or of
characters (keys and values together), so that texts a client sends, as long as they may be, never hold
more than `max_chars` of memory however long the server runs."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable


class TextMemo:
    def __init__(self, max_entries: int, max_chars: int) -> None:
        if max_entries < 1 or max_chars < 1:
            raise ValueError("a TextMemo holds at least one entry and one character")
        self.max_entries, self.max_chars = max_entries, max_chars
        self._entries: OrderedDict[str, str] = OrderedDict()
        self._num_chars = 0
        self._lock = threading.Lock()  # used from worker threads

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def num_chars(self) -> int:
        return self._num_chars

    def get(self, key: str) -> str | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: str, value: str) -> None:
        size = len(key) + len(value)
        if size > self.max_chars:
            return  # larger than the whole memo: recomputed each time rather than emptying the memo for it
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._num_chars -= len(key) + len(old)
            self._entries[key] = value
            self._num_chars += size
            while len(self._entries) > self.max_entries or self._num_chars > self.max_chars:
                k, v = self._entries.popitem(last=False)
                self._num_chars -= len(k) + len(v)

    def memoised(self, compute: Callable[[str], str], key: str) -> str:
        """`compute(key)`, remembered."""
        value = self.get(key)
        if value is None:
            value = compute(key)
            self.put(key, value)
        return value
