"""Background prefills in the scheduler, on a real BlockManager with prefix caching, no model: they run only
when nothing else waits or runs, in chunks of PREFILL_CHUNK, give their blocks back to a request that
arrives (their full blocks stay cached), never sample, and are dropped rather than wait for blocks."""

from __future__ import annotations

import itertools

from velollm.config import SchedulerConfig
from velollm.engine.block_manager import BlockManager
from velollm.engine.request import Request, RequestStatus
from velollm.engine.scheduler import MAX_PREFILLS, PREFILL_CHUNK, Scheduler
from velollm.sampling_params import SamplingParams

BLOCK = 16
_clock = itertools.count()


def scheduler(num_blocks: int, budget: int = 4096) -> Scheduler:
    return Scheduler(SchedulerConfig(8, budget, 8192), BlockManager(num_blocks, BLOCK))


def request(name: str, token_ids: list[int]) -> Request:
    return Request(name, list(token_ids), SamplingParams(max_tokens=4), arrival_time=float(next(_clock)))


def step(s: Scheduler) -> list[tuple[str, int, bool]]:
    batch = s.schedule()
    sampled = [batch.samples(i) for i in range(len(batch.requests))]
    s.update(batch)
    for r, samples in zip(batch.requests, sampled):
        if samples:
            r.output_token_ids.append(7)
    return [(r.request_id, n, x) for r, n, x in zip(batch.requests, batch.num_scheduled_tokens, sampled)]


def test_prefill_runs_in_chunks_never_samples_and_leaves_its_full_blocks_cached():
    s = scheduler(num_blocks=256)
    ids = list(range(1, 1200 + 5))  # 1204 tokens: 75 full blocks (1200 tokens), 4 left over
    s.add_prefill(request("p", ids))
    assert step(s) == [("p", PREFILL_CHUNK, False)]
    assert step(s) == [("p", PREFILL_CHUNK, False)]
    assert step(s) == [("p", 1200 - 2 * PREFILL_CHUNK, False)]  # only full blocks: the tail is never cached
    assert not s.has_unfinished() and s.num_prefills == 1 and s.num_prefill_tokens == 1200
    assert s.block_manager.num_free_blocks == 256  # its blocks are free (evictable), and cached:
    nxt = request("next", ids + [9, 9, 9])
    s.add(nxt)
    assert step(s) == [("next", 1207 - 1200, True)] and nxt.num_cached_tokens == 1200


def test_a_request_that_arrives_pauses_the_prefill_which_resumes_from_the_cache():
    s = scheduler(num_blocks=256)
    ids = list(range(1, 2001))
    s.add_prefill(request("p", ids))
    assert step(s) == [("p", PREFILL_CHUNK, False)]
    s.add(request("user", list(range(5000, 5040))))
    assert step(s) == [("user", 40, True)]  # alone: the prefill is paused
    prefill = s.prefills[0]
    assert prefill.status is RequestStatus.WAITING and prefill.block_table == []
    while s.running:
        assert [name for name, *_ in step(s)] == ["user"]  # never batched with a request's steps
        if len(s.running[0].output_token_ids) >= 4:
            s.finish(s.running[0])
    assert step(s) == [("p", PREFILL_CHUNK, False)] and prefill.num_cached_tokens == PREFILL_CHUNK  # resumed


def test_no_free_blocks_drops_the_prefill_and_leaks_none():
    s = scheduler(num_blocks=8)  # 128 tokens of KV
    big = request("big", list(range(1, 400)))
    s.add_prefill(big)
    assert step(s) == []  # 256 tokens' blocks (the first chunk) do not fit: dropped, not waiting
    assert s.num_dropped_prefills == 1 and not s.has_unfinished() and s.block_manager.num_free_blocks == 8
    assert not s.prefills and big.finished and big.block_table == []


def test_oldest_prefills_go_beyond_the_queue_bound_and_failed_steps_drop_them():
    s = scheduler(num_blocks=256)
    for i in range(MAX_PREFILLS + 2):
        s.add_prefill(request(f"p{i}", list(range(100 * i + 1, 100 * i + 40))))
    assert [r.request_id for r in s.prefills] == [f"p{i}" for i in range(2, MAX_PREFILLS + 2)]
    assert s.num_dropped_prefills == 2
    batch = s.schedule()
    s.quarantine(batch.requests)  # the step failed: not retried, dropped with its blocks
    assert s.suspects == type(s.suspects)() and s.num_dropped_prefills == 3
    assert s.block_manager.num_free_blocks == 256


def test_a_prompt_already_cached_ends_without_a_step():
    s = scheduler(num_blocks=64)
    ids = list(range(1, 70))
    s.add(request("user", ids))
    step(s)
    s.finish(s.running[0])
    s.add_prefill(request("p", ids))
    assert step(s) == [] and s.num_prefills == 1 and s.num_prefill_tokens == 0
