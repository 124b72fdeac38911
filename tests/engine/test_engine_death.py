"""An exception that escapes the AsyncEngine's loop (not a failed step) kills the engine thread: its in-flight
and queued requests get EngineDead at once, later ones are refused up front (never a hang), and `dead` says why."""

from __future__ import annotations

import asyncio
import time

import pytest

from velollm.engine.async_engine import AsyncEngine
from velollm.errors import EngineDead, RequestFailed

from .helpers import greedy, make_engine, random_prompts


def test_a_dead_engine_fails_in_flight_and_later_requests(llama_folder):
    engine = AsyncEngine(make_engine(llama_folder), served_name="tiny")
    engine.start()

    def broken(deltas):  # a fault in the loop outside step(): nothing catches it there
        raise RuntimeError("dispatch broke")

    engine._dispatch = broken  # type: ignore[method-assign]
    prompts = random_prompts([8, 12, 16], seed=5)

    async def collect(prompt):
        return [d async for d in engine.generate(prompt, greedy(64))]

    async def main():
        return await asyncio.wait_for(asyncio.gather(*(collect(p) for p in prompts), return_exceptions=True), 60)

    try:
        results = asyncio.run(main())
        assert all(isinstance(r, EngineDead) for r in results), results
        assert "RuntimeError: dispatch broke" in str(results[0]) and "'tiny'" in str(results[0])
        assert engine.dead == "RuntimeError: dispatch broke"
        engine._thread.join(timeout=10)  # it delivers the errors, then returns: it may be a moment from its end
        assert not engine._thread.is_alive()
        with pytest.raises(EngineDead, match="restart the server"):  # refused up front: no stream is left waiting
            asyncio.run(asyncio.wait_for(collect(prompts[0]), 10))
    finally:
        engine.shutdown()


def test_a_failed_step_does_not_kill_the_engine(llama_folder):
    engine = AsyncEngine(make_engine(llama_folder))
    engine.start()
    step, calls = engine.engine.step, []

    def fails_once():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("one bad step")
        return step()

    engine.engine.step = fails_once  # type: ignore[method-assign]

    async def collect(prompt):
        return [d async for d in engine.generate(prompt, greedy(4))]

    try:
        with pytest.raises(RuntimeError, match="engine step failed"):
            asyncio.run(asyncio.wait_for(collect(random_prompts([8], seed=1)[0]), 60))
        assert engine.dead is None
        assert asyncio.run(asyncio.wait_for(collect(random_prompts([8], seed=2)[0]), 60))[-1].finished
    finally:
        engine.shutdown()


def _break_the_model(engine: AsyncEngine) -> None:
    """From now on every forward raises, as on a device with a sticky CUDA error (the self-check's too)."""
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    engine.engine.runner.model.forward = broken


def _step_together(engine: AsyncEngine, n: int) -> None:
    """The engine's next step waits (on its thread) until n requests are in, so that they share that step: the
    clients' requests reach the engine thread one by one, and it may otherwise step for the first one alone."""
    step = engine.engine.step

    def gathered():
        deadline = time.monotonic() + 30
        while len(engine.engine.scheduler.waiting) < n and time.monotonic() < deadline:
            engine._wakeup.wait(0.01)
            engine._wakeup.clear()
            engine._drain_commands()
        engine.engine.step = step  # type: ignore[method-assign]
        return step()

    engine.engine.step = gathered  # type: ignore[method-assign]


@pytest.mark.parametrize("async_scheduling", [False, True], ids=["sync", "async"])
def test_an_engine_whose_every_step_fails_is_declared_dead(llama_folder, async_scheduling):
    """Steps that fail for their requests fail those requests; once MAX_FAILED_STEPS steps in a row have failed
    (a suspect's retry alone not counted) and the self-check fails too, the engine is dead as if its thread died."""
    engine = AsyncEngine(make_engine(llama_folder, async_scheduling=async_scheduling), served_name="tiny")
    engine.start()
    prompts = random_prompts([8, 12, 16, 9, 10, 11], seed=7)

    async def collect(prompt):
        return [d async for d in engine.generate(prompt, greedy(4))]

    async def together(batch):
        return await asyncio.wait_for(asyncio.gather(*(collect(p) for p in batch), return_exceptions=True), 60)

    try:
        assert asyncio.run(together(prompts[:1]))[0][-1].finished
        _break_the_model(engine)
        # One batch of three fails (1 step), then each of its requests alone (isolation: not counted).
        _step_together(engine, 3)
        first = asyncio.run(together(prompts[:3]))
        assert all(isinstance(r, RequestFailed) for r in first), first
        assert engine.dead is None and engine.engine.failures.num_failed_steps == 1
        [failed] = asyncio.run(together([prompts[3]]))  # alone: step 2
        assert isinstance(failed, RequestFailed), failed
        [dead] = asyncio.run(together([prompts[4]]))  # step 3: the engine is checked before this one is answered
        assert isinstance(dead, EngineDead), dead
        engine._thread.join(timeout=10)
        assert not engine._thread.is_alive()
        assert engine.dead.startswith("EngineFailing: 3 steps failed in a row and a self-check failed too")
        assert "illegal memory access" in engine.dead
        with pytest.raises(EngineDead, match="restart the server"):
            asyncio.run(asyncio.wait_for(collect(prompts[5]), 10))
    finally:
        engine.shutdown()


def test_requests_that_keep_failing_alone_do_not_kill_a_working_engine(llama_folder, caplog):
    """Bad requests one after another fail steps in a row too, but the engine's self-check runs: it lives on."""
    engine = AsyncEngine(make_engine(llama_folder))
    engine.start()
    poison = 7  # a prompt starting with it breaks sampling, from its first step (as a fault validation misses)
    sample = engine.engine.sampler.sample_on_device

    def picky(logits, requests, apply_grammar=None):
        if any(r.token_ids_slice(0, 1) == [poison] for r in requests):
            raise RuntimeError("this request breaks the sampler")
        return sample(logits, requests, apply_grammar)

    engine.engine.sampler.sample_on_device = picky

    async def collect(prompt):
        return [d async for d in engine.generate(prompt, greedy(4))]

    try:
        for prompt in random_prompts([8, 9, 10, 11, 12], seed=3):
            with pytest.raises(RequestFailed):
                asyncio.run(asyncio.wait_for(collect([poison, *prompt]), 60))
        assert engine.dead is None
        assert "3 engine steps failed in a row but the engine runs a self-check" in caplog.text
        assert asyncio.run(asyncio.wait_for(collect(random_prompts([8], seed=4)[0]), 60))[-1].finished
        assert engine.engine.failures.num_failed_steps == 0
    finally:
        engine.shutdown()
