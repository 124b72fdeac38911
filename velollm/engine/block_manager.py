"""Paged KV block allocation with ref counts and prefix caching by chained hashes of full blocks."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from velollm.engine.request import Request


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None
    token_ids: tuple[int, ...] = ()


def chain_hash(parent: int | None, token_ids: tuple[int, ...]) -> int:
    return hash((parent, token_ids))


def chain_root(request: Request) -> int | None:
    """The parent of a request's first block: its cache salt's, so salted chains never meet others."""
    salt = request.params.cache_salt
    return None if salt is None else hash(("cache_salt", salt))


class BlockManager:
    """Free blocks sit in an LRU queue; a freed block keeps its hash until it is reused (lazy eviction)."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_blocks: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.hash_to_block: dict[int, int] = {}
        self.prefix_cache_queries = 0  # tokens looked up, as vLLM counts them
        self.prefix_cache_hits = 0  # tokens found

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_blocks)

    @property
    def num_allocated_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    def usage(self) -> float:
        return self.num_allocated_blocks / self.num_blocks

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def match_prefix(self, request: Request) -> int:
        """Take the cached full blocks of the request's tokens; return the number of tokens they hold.

        The final token is never served from the cache, so its logits are always computed.
        """
        num_tokens = request.num_tokens
        self.prefix_cache_queries += num_tokens
        if not self.enable_prefix_caching:
            return 0
        parent = chain_root(request)
        for start in range(0, num_tokens - 1 - self.block_size + 1, self.block_size):
            tokens = tuple(request.token_ids_slice(start, start + self.block_size))
            block_hash = chain_hash(parent, tokens)
            block_id = self.hash_to_block.get(block_hash)
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                break
            self._take(block_id)
            request.block_table.append(block_id)
            request.block_hashes.append(block_hash)
            parent = block_hash
        num_cached = len(request.block_table) * self.block_size
        self.prefix_cache_hits += num_cached
        return num_cached

    def allocate(self, request: Request, num_total_tokens: int) -> bool:
        """Grow the block table to hold `num_total_tokens`; False (and no change) when blocks run out."""
        num_new = self.blocks_needed(num_total_tokens) - len(request.block_table)
        if num_new <= 0:
            return True
        if num_new > len(self.free_blocks):
            return False
        for _ in range(num_new):
            block_id = next(iter(self.free_blocks))
            self._take(block_id)
            self._evict(block_id)
            request.block_table.append(block_id)
        return True

    def cache_full_blocks(self, request: Request) -> list[int]:
        """Register the hashes of blocks that this step filled, so later requests can share them; the blocks
        registered."""
        registered: list[int] = []
        if not self.enable_prefix_caching:
            return registered
        # Only tokens the host knows: under async scheduling the KV of a placeholder is computed before its id
        # is read back.
        num_known = min(request.num_computed_tokens, request.num_tokens)
        num_full = min(num_known // self.block_size, len(request.block_table))
        parent = request.block_hashes[-1] if request.block_hashes else chain_root(request)
        for index in range(len(request.block_hashes), num_full):
            start = index * self.block_size
            tokens = tuple(request.token_ids_slice(start, start + self.block_size))
            parent = chain_hash(parent, tokens)
            request.block_hashes.append(parent)
            block = self.blocks[request.block_table[index]]
            if parent not in self.hash_to_block and block.hash is None:
                block.hash, block.token_ids = parent, tokens
                self.hash_to_block[parent] = block.block_id
                registered.append(block.block_id)
        return registered

    def uncache(self, block_ids: list[int]) -> None:
        """Take blocks out of the prefix cache: a failed step registered them, and their KV may never have been
        written (an async step registers at launch; a step can fail at its read-back)."""
        for block_id in block_ids:
            self._evict(block_id)

    def free(self, request: Request) -> None:
        # Tail blocks first, so the LRU queue evicts a sequence's end before its shared prefix.
        for block_id in reversed(request.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free_blocks[block_id] = None
        request.block_table = []
        request.block_hashes = []
        request.num_computed_tokens = 0

    def reset(self) -> None:
        """Every block free and no prefix cached (the KV cache was released and allocated anew)."""
        self.blocks = [Block(i) for i in range(self.num_blocks)]
        self.free_blocks = OrderedDict.fromkeys(range(self.num_blocks))
        self.hash_to_block = {}

    def _take(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.free_blocks[block_id]
        block.ref_count += 1

    def _evict(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.hash is not None:
            if self.hash_to_block.get(block.hash) == block_id:
                del self.hash_to_block[block.hash]
            block.hash, block.token_ids = None, ()
