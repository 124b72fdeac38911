"""Scheduler decisions on a real BlockManager, no model: decode-first order, chunked prefill under the
token budget, the preemption victim, and fitting a lone prompt's chunk to the free blocks."""

from __future__ import annotations

import itertools

from velollm.config import SchedulerConfig
from velollm.engine.block_manager import BlockManager
from velollm.engine.request import Request, RequestStatus
from velollm.engine.scheduler import ScheduledBatch, Scheduler
from velollm.sampling_params import SamplingParams

BLOCK = 4
_clock = itertools.count()


def scheduler(num_blocks: int, budget: int, max_num_seqs: int = 8) -> Scheduler:
    return Scheduler(SchedulerConfig(max_num_seqs, budget, 1024),
                     BlockManager(num_blocks, BLOCK, enable_prefix_caching=False))


def request(name: str, num_prompt: int) -> Request:
    # Arrival times set explicitly: FCFS and "newest" must not depend on the clock's resolution.
    return Request(name, list(range(1, num_prompt + 1)), SamplingParams(), arrival_time=float(next(_clock)))


def step(s: Scheduler, sample: bool = True) -> list[tuple[str, int]]:
    """One scheduled step: [(request id, tokens scheduled)]; requests that reached their end 'sample' a token."""
    batch = s.schedule()
    s.update(batch)
    for r in batch.requests:
        if sample and r.num_computed_tokens == r.num_tokens:
            r.output_token_ids.append(7)
    return [(r.request_id, n) for r, n in zip(batch.requests, batch.num_scheduled_tokens)]


def test_long_prompt_is_split_into_budget_sized_chunks():
    s = scheduler(num_blocks=64, budget=8)
    s.add(request("long", 20))
    assert step(s) == [("long", 8)]
    assert step(s) == [("long", 8)]
    assert step(s) == [("long", 4)]  # the last chunk samples
    assert step(s) == [("long", 1)]  # then one token per decode step


def test_decodes_go_first_then_prefills_share_the_rest_of_the_budget():
    s = scheduler(num_blocks=64, budget=10)
    s.add(request("a", 3))
    s.add(request("b", 3))
    assert step(s) == [("a", 3), ("b", 3)]
    s.add(request("c", 30))
    # a and b decode (one token each) before c's prefill, which gets what is left of the budget
    assert step(s) == [("a", 1), ("b", 1), ("c", 8)]
    # c, mid-prefill, is scheduled after the decodes even though it is running too
    assert step(s) == [("a", 1), ("b", 1), ("c", 8)]


def test_waiting_requests_are_admitted_in_arrival_order_up_to_max_num_seqs():
    s = scheduler(num_blocks=64, budget=100, max_num_seqs=2)
    for name in ("x", "y", "z"):
        s.add(request(name, 2))
    assert step(s) == [("x", 2), ("y", 2)]
    assert [r.request_id for r in s.waiting] == ["z"]


def test_preemption_takes_the_newest_request_outside_the_batch():
    # 6 blocks of 4 tokens: three requests of 8 tokens hold 2 blocks each, the cache is full.
    s = scheduler(num_blocks=6, budget=64)
    for name in ("old", "mid", "new"):
        s.add(request(name, 8))
    assert step(s) == [("old", 8), ("mid", 8), ("new", 8)]  # each samples its 9th token
    assert s.block_manager.num_free_blocks == 0
    # "old" needs a third block for token 9: the newest running request gives its blocks up
    batch = step(s)
    new = next(r for r in s.waiting if r.request_id == "new")
    assert ("new", 1) not in batch and new.status is RequestStatus.WAITING and new.num_preemptions == 1
    assert batch[:2] == [("old", 1), ("mid", 1)] and s.num_preemptions == 1
    assert new.block_table == [] and new.num_cached_tokens == -1  # its KV is recomputed when it runs again
    assert s.waiting[0] is new  # first in line again


def test_a_request_that_cannot_fit_preempts_itself_rather_than_an_older_one():
    s = scheduler(num_blocks=4, budget=64)
    s.add(request("old", 8))
    s.add(request("new", 8))
    step(s)
    # both need a third block; "old" goes first and takes "new"'s blocks, "new" waits
    victim = ScheduledBatch()
    assert s._pick_victim(s.running[0], victim).request_id == "new"
    only = [r for r in s.running if r.request_id == "old"]
    assert s._pick_victim(only[0], ScheduledBatch(requests=list(s.running))) is only[0]


def test_lone_prompt_larger_than_free_cache_gets_a_chunk_that_fits():
    s = scheduler(num_blocks=3, budget=64)  # 12 tokens of cache, a 40-token prompt
    big = request("big", 40)
    s.add(big)
    assert step(s, sample=False) == [("big", 12)]  # fitted to the free blocks, not refused
    assert s.block_manager.num_free_blocks == 0 and big.status is RequestStatus.RUNNING


def test_a_waiting_prompt_does_not_take_blocks_from_running_requests():
    s = scheduler(num_blocks=4, budget=64)
    s.add(request("run", 8))
    step(s)
    s.add(request("wait", 12))  # needs 3 blocks, 2 are free: it waits, holding nothing
    assert step(s) == [("run", 1)]
    assert s.waiting[0].request_id == "wait" and s.waiting[0].block_table == []
