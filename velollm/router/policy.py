"""Balancing policies: which replica of a model takes a request.

`Replica` is what a policy sees of a backend; `Policy.choose` picks among the admitted replicas not
tried yet for this request (never empty); `Policy.routed` learns where the request went (prefix-aware
remembers its prompt's blocks there). `make_policy` builds one per model from the config's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from velollm.router.prompt_blocks import PromptBlocks


class Replica(Protocol):
    name: str

    @property
    def outstanding(self) -> int:
        """Requests sent to it and not finished, plus those waiting in its queue."""
        ...


class Policy(Protocol):
    name: str

    def choose(self, candidates: Sequence[Replica], blocks: PromptBlocks) -> Replica: ...

    def routed(self, replica: Replica, blocks: PromptBlocks) -> None: ...


def make_policy(name: str, *, load_margin: float = 0.5, table_size: int = 200_000) -> Policy:
    from velollm.router.least_outstanding import LeastOutstanding
    from velollm.router.prefix_aware import PrefixAware
    from velollm.router.round_robin import RoundRobin

    if name == "least-outstanding":
        return LeastOutstanding()
    if name == "round-robin":
        return RoundRobin()
    if name == "prefix-aware":
        return PrefixAware(load_margin=load_margin, table_size=table_size)
    raise ValueError(f"unknown balancing policy {name!r}")
