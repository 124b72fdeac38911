"""EncodeWorker: big texts tokenised in a child process, so the server's GIL stays free.

`tokenizers.Tokenizer.encode` holds the GIL for the whole call: 3 MB of text took ~10 s here, during which
no other thread (the event loop, /health) ran. Big inputs go to one spawned process per tokenizer, which
loads the same tokenizer from its JSON; the caller's thread only waits (GIL released). Exact: the child
encodes the whole text with the same tokenizer, nothing is split.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor

logger = logging.getLogger(__name__)

# The child's tokenizer (module state of the worker process only: one tokenizer per process).
_backend = None


def _load(tokenizer_json: str) -> None:
    global _backend
    import tokenizers

    _backend = tokenizers.Tokenizer.from_str(tokenizer_json)


def _encode(text: str, add_special_tokens: bool) -> list[int]:
    assert _backend is not None
    return _backend.encode(text, add_special_tokens=add_special_tokens).ids


class EncodeWorker:
    """One child process for one tokenizer, started on first use; `close()` ends it."""

    def __init__(self, tokenizer_json: str) -> None:
        self._json = tokenizer_json
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_load, initargs=(self._json,))
            pool = self._pool
        return pool.submit(_encode, text, add_special_tokens).result()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
