"""LLMEngine.add_prefill on a tiny model: the prefill fills the prefix cache without sampling, a request that
arrives waits for one chunk at most (the step already running), outputs are the same as without it, and no
path (done, paused, aborted, dropped, slept) leaks a KV block. Sync and async scheduling alike."""

from __future__ import annotations

import logging

import pytest

from tests.greedy_agreement import assert_all_greedy_agree
from velollm.engine.scheduler import PREFILL_CHUNK, ScheduledBatch

from .helpers import greedy, make_engine, random_prompts, run_all


@pytest.fixture(params=[False, True], ids=["sync", "async"])
def engine(request, llama_folder):
    return make_engine(llama_folder, async_scheduling=request.param)


def drain(engine) -> list:
    deltas = []
    while engine.has_unfinished_requests():
        deltas += engine.step()
    return deltas


def test_a_prefilled_prefix_is_a_cache_hit_and_changes_no_output(engine, llama_folder):
    history, question = random_prompts([900, 20], seed=1)
    engine.add_prefill(history)
    assert drain(engine) == []  # nothing sampled, nothing returned
    stats = engine.stats()
    assert stats.num_turn_prefills == 1 and stats.num_turn_prefill_tokens == 896  # 56 full blocks of 16
    assert stats.num_generation_tokens == 0 and stats.num_prompt_tokens == 0 and not engine.requests
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
    [out] = run_all(engine, [history + question], greedy(8, logprobs=2))
    assert out.num_cached_tokens == 896
    [cold] = run_all(make_engine(llama_folder), [history + question], greedy(8, logprobs=2))
    assert cold.num_cached_tokens == 0
    assert_all_greedy_agree([out], [cold], what="cold")  # cached and fresh prefixes sum in other orders


def test_a_request_waits_for_one_chunk_at_most_and_the_prefill_resumes_after_it(engine):
    history, other = random_prompts([1000, 40], seed=2)
    engine.add_prefill(history)
    engine.step()  # the first chunk runs (or, async, is launched)
    request = engine.add_request(other, greedy(4))
    first = []
    while not first:
        first = [d for d in engine.step() if d.request_id == request.request_id]
    scheduler = engine.scheduler
    # the chunk in progress when the request came is all the prefill did before the request's first token
    assert scheduler.num_prefill_tokens == PREFILL_CHUNK
    prefill = scheduler.prefills[0]
    assert prefill.block_table == [] and prefill.num_cached_tokens == -1  # paused, its blocks given back
    drain(engine)
    assert scheduler.num_prefills == 1 and scheduler.num_prefill_tokens == 992
    assert prefill.num_cached_tokens == PREFILL_CHUNK  # resumed from the blocks it had cached
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks and not engine.requests


def test_aborted_dropped_and_slept_prefills_leak_no_blocks(engine):
    bm = engine.block_manager
    [a, b] = random_prompts([1000, 600], seed=3)
    prefill = engine.add_prefill(a)
    engine.step()
    engine.abort_request(prefill.request_id)
    drain(engine)
    assert bm.num_free_blocks == bm.num_blocks and not engine.requests and engine.stats().num_aborted == 0
    queued = engine.add_prefill(b)
    engine.abort_request(queued.request_id)  # before it ran: found in the scheduler's queue
    assert not engine.scheduler.prefills and not engine.has_unfinished_requests() and queued.finished
    engine.add_prefill(b)
    engine.step()
    engine.sleep()
    engine.wake()
    assert bm.num_free_blocks == bm.num_blocks and not engine.requests and not engine.scheduler.prefills
    # no room for one chunk: dropped at once, not kept waiting for blocks
    bm.free_blocks = type(bm.free_blocks)(list(bm.free_blocks.items())[:8])
    engine.add_prefill(b)
    assert drain(engine) == [] and engine.stats().num_dropped_turn_prefills == 1 and not engine.requests


def test_a_prefill_whose_step_fails_is_dropped_not_raised(engine):
    """No client waits on a prefill: its failed step drops it (counted) rather than raising RequestFailed."""
    prefill = engine.add_prefill(random_prompts([600], seed=5)[0])
    run = engine.runner.run

    def fail(*args, **kwargs):
        raise RuntimeError("device fault")

    engine.runner.run = fail
    assert engine.step() == []
    engine.runner.run = run
    assert prefill.finished and engine.stats().num_dropped_turn_prefills == 1
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
    assert not engine.has_unfinished_requests() and engine.failures.num_failed_steps == 1


def test_prompts_the_engine_would_refuse_or_not_cache_are_not_queued(llama_folder):
    engine = make_engine(llama_folder)
    assert engine.add_prefill(list(range(3, 10))) is None  # under one block: nothing to cache
    assert engine.add_prefill([5] * (engine.max_model_len + 1)) is None
    assert make_engine(llama_folder, enable_prefix_caching=False).add_prefill(list(range(3, 100))) is None


def test_a_failed_step_logs_what_happens_to_its_prefills_and_requests(engine, caplog):
    """The warning says what quarantine does: a step of prefills alone drops them (nothing is retried); a step
    with a client's request beside them retries that one alone and drops the prefills."""
    run = engine.runner.run

    def fail(*args, **kwargs):
        raise RuntimeError("device fault")

    engine.add_prefill(random_prompts([600], seed=5)[0])
    engine.runner.run = fail
    with caplog.at_level(logging.WARNING, logger="velollm.engine.step_failures"):
        engine.step()
    [alone] = [r.getMessage() for r in caplog.records if "step over" in r.getMessage()]
    assert alone.endswith("device fault); dropping 1 background prefill (no client waits on one)"), alone
    assert "retrying" not in alone
    engine.runner.run = run
    assert not engine.has_unfinished_requests()
    # A batch that held both (an async step's batches in flight are abandoned together): the request is retried
    prefill = engine.add_prefill(random_prompts([600], seed=6)[0])
    request = engine.add_request(random_prompts([40], seed=7)[0], greedy(4))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="velollm.engine.step_failures"):
        engine.failures.contain(ScheduledBatch([prefill, request], [16, 16]), RuntimeError("device fault"),
                                retrying=False)
    [mixed] = [r.getMessage() for r in caplog.records if "step over" in r.getMessage()]
    assert mixed.endswith("device fault); retrying the other 1 each alone, dropping 1 background prefill (no "
                          "client waits on one)"), mixed
    assert prefill.finished and list(engine.scheduler.suspects) == [request]
    assert [d.request_id for d in drain(engine) if d.finished] == [request.request_id]


def test_a_step_failing_past_the_engine_drops_the_async_engines_prefills(llama_folder):
    """A step that raises out of LLMEngine.step (not contained there) fails every stream and drops the background
    prefills (AsyncEngine._fail_all), which no longer sit in `requests`: the prefill is not run afterwards."""
    import time

    from velollm.engine.async_engine import AsyncEngine

    engine = AsyncEngine(make_engine(llama_folder))
    step, calls = engine.engine.step, []

    def fails_once():
        calls.append(len(engine.engine.scheduler.prefills))
        if len(calls) == 1:
            raise RuntimeError("one bad step")
        return step()

    engine.engine.step = fails_once  # type: ignore[method-assign]
    engine.start()
    try:
        engine.prefill(random_prompts([600], seed=8)[0])
        deadline = time.monotonic() + 30
        while (not calls or engine.engine.has_unfinished_requests()) and time.monotonic() < deadline:
            time.sleep(0.01)
        stats = engine.stats()
        assert calls[0] == 1 and not engine.engine.scheduler.prefills  # it was there when the step failed
        assert stats.num_turn_prefills == 0 and stats.num_allocated_blocks == 0 and engine.dead is None
    finally:
        engine.shutdown()


def test_an_abandoned_step_leaves_a_prefill_that_had_finished_counted_as_done(engine, caplog):
    """Under async scheduling a prefill's last chunk ends it at launch; a failure surfacing in the next step
    abandons both steps' batches. The finished prefill is not dropped again (counted done and dropped, and the
    warning saying it is dropped)."""
    prefill = engine.add_prefill(random_prompts([40], seed=9)[0])  # two full blocks: one step
    drain(engine)
    request = engine.add_request(random_prompts([40], seed=10)[0], greedy(4))
    with caplog.at_level(logging.WARNING, logger="velollm.engine.step_failures"):
        engine.failures.abandon([ScheduledBatch([prefill], [32]), ScheduledBatch([request], [40])],
                                RuntimeError("device fault"))
    [message] = [r.getMessage() for r in caplog.records if "step over" in r.getMessage()]
    assert message.endswith("device fault); retrying each alone"), message
    stats = engine.stats()
    assert prefill.finished and stats.num_turn_prefills == 1 and stats.num_dropped_turn_prefills == 0
    assert [d.request_id for d in drain(engine) if d.finished] == [request.request_id]
