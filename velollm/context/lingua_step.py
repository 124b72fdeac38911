"""LinguaStep: the token-classifier step of `compress` (after the lossless steps, before truncation).

When a chat still does not fit, the contents of its oldest compressible messages (long plain-text user
and tool contents before the last user message; never a system prompt, tool-call arguments or a tool
result that parses as JSON) are compressed by LinguaCompressor, at the rate that brings the prompt to
its budget (less an eighth, so the next turns fit too), never below MIN_RATE. When even all of them at
MIN_RATE would not make it fit, the step leaves them alone: truncation (and the summary) must drop turns
then, and the classifier's time would go to turns that are dropped. Each compressed text is
cached by a hash of its input: the conversation's later turns get the same text for the same message
(so their prompts share the prefix the engine holds) without running the classifier again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from velollm.context.text_memo import TextMemo

if TYPE_CHECKING:  # torch: imported only where a classifier is loaded (serve --config without one has none)
    from velollm.context.lingua import LinguaCompressor
    from velollm.embed.token_classifier import ClassifierFolder

logger = logging.getLogger(__name__)

Messages = list[Mapping[str, Any]]
COMPRESSIBLE_ROLES = frozenset({"user", "tool"})
MIN_RATE = 0.33  # LLMLingua-2's paper compresses 2x to 5x; below a third the text stops reading well
MIN_TOKENS = 48  # shorter messages are left alone: little to gain, and their words matter
SLACK_DIVISOR = 8  # aim at budget - budget / 8: the next turns fit without compressing again
CAPACITY = 4096
MAX_CACHED_CHARS = 16 << 20  # the cache's texts (compressed contents, client-sized) in characters, all together


def token_counter(tokenizer: Any) -> Callable[[str], int]:
    """Tokens of a text in the served model's tokenizer (no special tokens), memoised per word."""
    backend = getattr(tokenizer, "backend", None)
    memo: dict[str, int] = {}

    def count(text: str) -> int:
        n = memo.get(text)
        if n is None:
            ids = backend.encode(text, add_special_tokens=False).ids if backend is not None \
                else tokenizer.encode(text, add_special_tokens=False)
            n = memo[text] = len(ids)
        return n

    return count


def is_json(text: str) -> bool:
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{\"":
        return False
    try:
        json.loads(stripped)
    except ValueError:
        return False
    return True


class LinguaStep:
    """One classifier for the server (`load`ed on first use), and the cache of what it compressed."""

    @classmethod
    def of_folder(cls, folder: ClassifierFolder, device: str = "cpu") -> LinguaStep:
        from velollm.context.lingua import LinguaCompressor

        return cls(lambda: LinguaCompressor.from_folder(folder.path, device))

    def __init__(self, load: Callable[[], LinguaCompressor], capacity: int = CAPACITY) -> None:
        self.load = load
        self.capacity = capacity
        self._compressor: LinguaCompressor | None = None
        self._error: Exception | None = None
        self._cache = TextMemo(capacity, MAX_CACHED_CHARS)
        self._lock = threading.Lock()

    @property
    def compressor(self) -> LinguaCompressor | None:
        """The classifier, loaded on first use; None when it could not be (logged once: the step is then
        skipped, and truncation and the summary make the prompt fit)."""
        with self._lock:
            if self._compressor is None and self._error is None:
                try:
                    self._compressor = self.load()
                except Exception as e:  # noqa: BLE001 (safetensors raises its own error type): the request goes on
                    self._error = e
                    logger.error("context compressor not loaded, its step is skipped: %s", e)
            return self._compressor

    def cached(self, messages: Messages, namespace: str = "") -> Messages:
        """`messages` with every compressible content compressed before replaced by its compressed text."""
        return self._cached(messages, namespace)[0]

    def _cached(self, messages: Messages, namespace: str) -> tuple[Messages, list[int]]:
        """The cached texts in, and the indices of the compressible messages still as sent."""
        out, pending = list(messages), []
        for i in self.compressible(messages):
            text = self._get(self._key(namespace, messages[i]["content"]))
            if text is None:
                pending.append(i)
            else:
                out[i] = {**messages[i], "content": text}
        return out, pending

    def fit(self, messages: Messages, count: Callable[[Messages], int], count_text: Callable[[str], int],
            budget: int, namespace: str = "") -> Messages:
        """Oldest compressible messages compressed until `count` is within `budget` (or none is left)."""
        messages, pending = self._cached(messages, namespace)
        total = count(messages)
        if total <= budget or not pending:
            return messages
        target = budget - budget // SLACK_DIVISOR
        sizes = {i: count_text(messages[i]["content"]) for i in pending}
        pending = [i for i in pending if sizes[i] >= MIN_TOKENS]
        if sum(sizes[i] for i in pending) * (1 - MIN_RATE) < total - budget:
            return messages  # out of its reach: truncation drops turns anyway, no classifier time spent on them
        compressor = self.compressor
        if compressor is None:
            return messages
        while total > budget and pending:
            excess, chosen, pool = total - target, [], 0
            while pending and pool * (1 - MIN_RATE) < excess:
                chosen.append(pending.pop(0))
                pool += sizes[chosen[-1]]
            rate = round(max(MIN_RATE, 1 - excess / pool), 2)
            out = list(messages)
            for i in chosen:
                content = messages[i]["content"]
                text = compressor.compress(content, rate, count_text)
                if count_text(text) >= sizes[i]:
                    text = content  # no shorter (the decoder's spacing): kept, and remembered as kept
                self._put(self._key(namespace, content), text)
                out[i] = {**messages[i], "content": text}
            messages = out
            total = count(messages)
        return messages

    @staticmethod
    def compressible(messages: Messages) -> list[int]:
        """Indices of the contents the step may compress, oldest first."""
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=0)
        return [i for i, m in enumerate(messages[:last_user])
                if m.get("role") in COMPRESSIBLE_ROLES and isinstance(m.get("content"), str)
                and not m.get("tool_calls") and not is_json(m["content"])]

    @staticmethod
    def _key(namespace: str, content: str) -> str:
        return hashlib.sha256(f"{namespace}\0{content}".encode("utf-8", "surrogatepass")).hexdigest()

    def _get(self, key: str) -> str | None:
        return self._cache.get(key)

    def _put(self, key: str, text: str) -> None:
        self._cache.put(key, text)
