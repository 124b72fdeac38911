"""Round-robin: each request to the next admitted replica, in name order."""

from __future__ import annotations

from collections.abc import Sequence

from velollm.router.policy import Replica
from velollm.router.prompt_blocks import PromptBlocks


class RoundRobin:
    name = "round-robin"

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, candidates: Sequence[Replica], blocks: PromptBlocks) -> Replica:
        ordered = sorted(candidates, key=lambda r: r.name)
        self._turn += 1
        return ordered[self._turn % len(ordered)]

    def routed(self, replica: Replica, blocks: PromptBlocks) -> None:
        pass
