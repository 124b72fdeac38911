"""Prefix-aware (cache-aware) balancing, after SGLang's router: a prompt goes to the replica that
served its longest prefix, so that replica's prefix cache answers it, unless that replica already
holds more than its share of the load plus a margin; otherwise, and for prompts nobody served yet, the
least-outstanding replica. Prefixes are remembered as chained block hashes (PromptBlocks), at most
`table_size` of them (least recently used forgotten first)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from velollm.router.least_outstanding import least_outstanding
from velollm.router.policy import Replica
from velollm.router.prompt_blocks import PromptBlocks


class PrefixAware:
    name = "prefix-aware"

    def __init__(self, load_margin: float = 0.5, table_size: int = 200_000) -> None:
        self.load_margin = load_margin
        self.table_size = table_size
        self._owner: OrderedDict[int, str] = OrderedDict()  # block hash -> replica name
        self._turn = 0
        self.matched_blocks = 0  # over all requests: blocks found on the chosen replica (for tests, logs)

    def choose(self, candidates: Sequence[Replica], blocks: PromptBlocks) -> Replica:
        self._turn += 1
        by_name = {r.name: r for r in candidates}
        owner, depth = self._longest_owner(blocks, by_name)
        if owner is not None and self._within_bound(owner, candidates):
            self.matched_blocks += depth
            return owner
        return least_outstanding(candidates, self._turn)

    def routed(self, replica: Replica, blocks: PromptBlocks) -> None:
        for h in blocks.hashes:
            self._owner[h] = replica.name
            self._owner.move_to_end(h)
        while len(self._owner) > self.table_size:
            self._owner.popitem(last=False)

    def _longest_owner(self, blocks: PromptBlocks, by_name: dict[str, Replica]) -> tuple[Replica | None, int]:
        """The replica recorded for the deepest block of this prompt seen before (chained hashes: a
        block matches only if everything before it matched), among the candidates."""
        found: Replica | None = None
        depth = 0
        for i, h in enumerate(blocks.hashes):
            name = self._owner.get(h)
            if name is None:
                break
            if name in by_name:
                found, depth = by_name[name], i + 1
        return found, depth

    def _within_bound(self, replica: Replica, candidates: Sequence[Replica]) -> bool:
        mean = sum(r.outstanding for r in candidates) / len(candidates)
        return replica.outstanding < mean * (1 + self.load_margin) + 1
