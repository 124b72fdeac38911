"""Least-outstanding (the default): the replica with the fewest requests sent or waiting for it;
ties go to each tied replica in turn, so an idle pool still spreads its load."""

from __future__ import annotations

from collections.abc import Sequence

from velollm.router.policy import Replica
from velollm.router.prompt_blocks import PromptBlocks


def least_outstanding(candidates: Sequence[Replica], turn: int) -> Replica:
    fewest = min(r.outstanding for r in candidates)
    tied = sorted((r for r in candidates if r.outstanding == fewest), key=lambda r: r.name)
    return tied[turn % len(tied)]


class LeastOutstanding:
    name = "least-outstanding"

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, candidates: Sequence[Replica], blocks: PromptBlocks) -> Replica:
        self._turn += 1
        return least_outstanding(candidates, self._turn)

    def routed(self, replica: Replica, blocks: PromptBlocks) -> None:
        pass
