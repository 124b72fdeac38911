"""An exception that escapes the AsyncEngine's loop (not a failed step) kills the engine thread: its in-flight
and queued requests get EngineDead at once, later ones are refused up front (never a hang), and `dead` says why."""

from __future__ import annotations

import asyncio

import pytest

from velollm.engine.async_engine import AsyncEngine
from velollm.errors import EngineDead

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
