"""Block manager: ref counts, chained-hash prefix matching with a token check, lazy LRU eviction."""

from __future__ import annotations

from velollm.engine.block_manager import BlockManager
from velollm.engine.request import Request
from velollm.sampling_params import SamplingParams


def request(tokens: list[int], rid: str = "r") -> Request:
    return Request(rid, tokens, SamplingParams())


def fill(manager: BlockManager, req: Request) -> None:
    assert manager.allocate(req, req.num_tokens)
    req.num_computed_tokens = req.num_tokens
    manager.cache_full_blocks(req)


def test_shared_prefix_blocks_are_ref_counted():
    manager = BlockManager(num_blocks=8, block_size=4)
    a = request(list(range(10)), "a")
    fill(manager, a)
    b = request(list(range(9)) + [99], "b")
    assert manager.match_prefix(b) == 8
    assert b.block_table == a.block_table[:2]
    assert [manager.blocks[i].ref_count for i in a.block_table] == [2, 2, 1]
    manager.free(a)
    assert [manager.blocks[i].ref_count for i in b.block_table] == [1, 1]
    manager.free(b)
    assert manager.num_free_blocks == 8


def test_freed_blocks_stay_cached_until_reused_lru():
    manager = BlockManager(num_blocks=4, block_size=4)
    a = request(list(range(9)), "a")
    fill(manager, a)
    manager.free(a)
    again = request(list(range(9)), "again")
    assert manager.match_prefix(again) == 8
    manager.free(again)
    # allocating all blocks evicts the cached ones; afterwards nothing matches
    hog = request(list(range(100, 116)), "hog")
    assert manager.allocate(hog, 16)
    manager.free(hog)
    assert manager.match_prefix(request(list(range(9)), "late")) == 0


def test_hash_hit_with_different_tokens_is_rejected():
    manager = BlockManager(num_blocks=4, block_size=4)
    a = request([1, 2, 3, 4, 5], "a")
    fill(manager, a)
    block = manager.blocks[a.block_table[0]]
    block.token_ids = (9, 9, 9, 9)  # as if another token sequence had collided on the hash
    assert manager.match_prefix(request([1, 2, 3, 4, 5], "b")) == 0


def test_allocate_fails_without_side_effects():
    manager = BlockManager(num_blocks=2, block_size=4)
    r = request(list(range(12)))
    assert not manager.allocate(r, 12)
    assert r.block_table == [] and manager.num_free_blocks == 2


def test_cache_salt_partitions_the_prefix_cache():
    """vLLM's cache_salt: blocks are shared only between requests of one salt (none being a salt of its own)."""
    manager = BlockManager(num_blocks=16, block_size=4)

    def salted(salt: str | None, rid: str) -> Request:
        return Request(rid, list(range(10)), SamplingParams(cache_salt=salt))

    fill(manager, salted("tenant-a", "a"))
    assert manager.match_prefix(salted(None, "plain")) == 0
    assert manager.match_prefix(salted("tenant-b", "b")) == 0
    assert manager.match_prefix(salted("tenant-a", "a2")) == 8
    fill(manager, salted(None, "plain2"))
    assert manager.match_prefix(salted(None, "plain3")) == 8
