"""FitPlan: what fitting did to a conversation (the messages it dropped or summarised, the summary, whether
the rest was compressed), kept per conversation prefix so the next turn applies the same plan.

A chat's next turn is the same messages plus the answer and a new user message. Fitting it from scratch
re-renders and re-counts the whole history many times (the compression steps, the truncation's binary
search, the summary) and may cut it elsewhere, which changes the prompt's start and loses the prefix
cache. Applying the previous turn's plan instead costs one render of the kept messages, and as long as
the result fits, the prompt is the previous prompt followed by what is new: the ids the engine holds.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Messages = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class FitPlan:
    mode: str
    context_len: int
    dropped: tuple[int, ...]  # indices into the conversation's messages
    summarized: tuple[int, ...]  # replaced by `summary` in the system prompt
    summary: str | None
    compressed: bool  # the kept messages went through the compressor's lossless steps

    @property
    def removed(self) -> frozenset[int]:
        return frozenset(self.dropped) | frozenset(self.summarized)


def _message_digest(message: Mapping[str, Any]) -> bytes:
    blob = json.dumps(message, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.blake2b(blob.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def prefix_digests(messages: Messages) -> list[bytes]:
    """Chained digests: entry i stands for messages[:i + 1] (order and content)."""
    out: list[bytes] = []
    h = b""
    for message in messages:
        h = hashlib.blake2b(h + _message_digest(message), digest_size=16).digest()
        out.append(h)
    return out


class PlanCache:
    """Plans by (mode, context, digest of the messages they were made for); least recently used dropped."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._plans: OrderedDict[tuple[str, int, bytes], tuple[int, FitPlan]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, digests: list[bytes], plan: FitPlan) -> None:
        if not digests:
            return
        key = (plan.mode, plan.context_len, digests[-1])
        with self._lock:
            self._plans[key] = (len(digests), plan)
            self._plans.move_to_end(key)
            while len(self._plans) > self.capacity:
                self._plans.popitem(last=False)

    def longest(self, digests: list[bytes], mode: str, context_len: int) -> FitPlan | None:
        """The plan made for the longest prefix of these messages (the whole of them included)."""
        with self._lock:
            for n in range(len(digests), 0, -1):
                hit = self._plans.get((mode, context_len, digests[n - 1]))
                if hit is not None:
                    self._plans.move_to_end((mode, context_len, digests[n - 1]))
                    return hit[1]
        return None
