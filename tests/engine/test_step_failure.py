"""A step that fails because of one request fails that request only; the others finish as if alone."""

from __future__ import annotations

import asyncio

import pytest

from tests.greedy_agreement import assert_all_greedy_agree
from velollm.engine.async_engine import AsyncEngine
from velollm.errors import InvalidRequest, RequestFailed
from velollm.sampling_params import SamplingParams

from .helpers import greedy, joined, make_engine, random_prompts, run_all


def _poison(params: SamplingParams) -> None:
    """Makes sampling raise inside every step from now on (top-k logprobs past the vocabulary): validation passed
    already, as a fault it misses would. Read each step, unlike the ids a request's first step puts on the device
    once (sampler.RequestTensors), so it bites mid-answer too."""
    params.logprobs = 1 << 40


@pytest.mark.parametrize("async_scheduling", [False, True], ids=["sync", "async"])
def test_one_bad_request_fails_alone_and_the_batch_runs_on(llama_folder, async_scheduling):
    engine = make_engine(llama_folder, async_scheduling=async_scheduling)
    prompts = random_prompts([10, 14, 18], seed=41)
    expected = run_all(make_engine(llama_folder), prompts, greedy(12, logprobs=2))
    for i, prompt in enumerate(prompts):
        engine.add_request(prompt, greedy(12, logprobs=2), f"good-{i}")
    bad = engine.add_request(random_prompts([9], seed=43)[0], greedy(8, min_tokens=2), "bad")
    _poison(bad.params)
    deltas_of: dict[str, list] = {}
    failed = []
    while engine.has_unfinished_requests():
        try:
            deltas = engine.step()
        except RequestFailed as exc:
            failed.append(exc.request_id)
            continue
        for delta in deltas:
            deltas_of.setdefault(delta.request_id, []).append(delta)
    assert failed == ["bad"]
    # the first step batched the bad request too: equal up to a near tie (tests/greedy_agreement.py)
    assert_all_greedy_agree([joined(p, deltas_of[f"good-{i}"]) for i, p in enumerate(prompts)], expected, what="alone")
    assert engine.block_manager.num_allocated_blocks == 0 and not engine.scheduler.suspects


@pytest.mark.parametrize("async_scheduling", [False, True], ids=["sync", "async"])
def test_async_engine_fails_only_the_bad_stream(llama_folder, async_scheduling):
    engine = AsyncEngine(make_engine(llama_folder, async_scheduling=async_scheduling))
    engine.start()
    prompts = random_prompts([12, 16], seed=47)

    async def collect(prompt, params):
        return [d async for d in engine.generate(prompt, params)]

    async def poisoned(prompt):
        # min_tokens spans the whole answer, so the poison lands however many tokens the engine thread ran ahead
        # of this coroutine on a busy machine
        params = greedy(256, min_tokens=256)
        async for _ in engine.generate(prompt, params):
            _poison(params)

    async def main():
        return await asyncio.gather(collect(prompts[0], greedy(16, logprobs=2)), poisoned(prompts[1]),
                                    return_exceptions=True)

    try:
        good, bad = asyncio.run(main())
        assert isinstance(bad, RequestFailed)
        [ref] = run_all(make_engine(llama_folder), [prompts[0]], greedy(16, logprobs=2))
        assert_all_greedy_agree([joined(prompts[0], good)], [ref], what="alone")  # it ran in a batch of two
        assert engine.stats().num_allocated_blocks == 0
    finally:
        engine.shutdown()


@pytest.mark.parametrize("params, param", [
    (dict(stop_token_ids=[-100000], min_tokens=2), "stop_token_ids"),
    (dict(stop_token_ids=[10**9]), "stop_token_ids"),
    (dict(logit_bias={10**6: 5}), "logit_bias"),
    (dict(logit_bias={-3: 5}), "logit_bias"),
])
def test_token_ids_outside_the_vocabulary_are_refused_before_running(llama_folder, params, param):
    engine = make_engine(llama_folder)
    with pytest.raises(InvalidRequest) as info:
        engine.add_request(random_prompts([5], seed=1)[0], SamplingParams(max_tokens=4, **params))
    assert info.value.param == param
    assert not engine.has_unfinished_requests()


@pytest.mark.parametrize("async_scheduling", [False, True], ids=["sync", "async"])
def test_a_step_that_fails_at_its_read_back_leaves_nothing_in_the_prefix_cache(llama_folder, async_scheduling):
    """The step registered its full blocks when it ran; it then fails where its ids are read (a device fault
    found at the sync), its KV lost with it. The retry must recompute the prompt, not take those blocks from
    the prefix cache: it finds none, and its tokens are a clean run's."""
    engine = make_engine(llama_folder, async_scheduling=async_scheduling)
    prompts = random_prompts([40, 36], seed=53)  # several full blocks of 16 each; two, so that they are retried
    expected = [ref.token_ids for ref in run_all(make_engine(llama_folder), prompts, greedy(10))]
    collect, failed = engine._collect, []

    def fail_once(launched):
        if not failed and launched.sampled is not None:
            failed.append(list(launched.batch.cached_blocks))
            for k, v in engine.runner.kv_caches:
                k.zero_(), v.zero_()  # the step's device work, lost with it
            raise RuntimeError("device fault at the read-back")
        return collect(launched)

    engine._collect = fail_once
    requests = [engine.add_request(prompt, greedy(10), f"r{i}") for i, prompt in enumerate(prompts)]
    tokens: dict[str, list[int]] = {r.request_id: [] for r in requests}
    while engine.has_unfinished_requests():
        for delta in engine.step():
            tokens[delta.request_id] += delta.token_ids
    assert failed and failed[0], "the failing step had registered full blocks"
    assert [tokens[r.request_id] for r in requests] == expected
    assert not set(failed[0]) & set(engine.block_manager.hash_to_block.values())
    assert [r.num_cached_tokens for r in requests] == [0, 0]
    assert engine.block_manager.num_allocated_blocks == 0 and not engine.scheduler.suspects
