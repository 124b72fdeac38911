"""A grammar compiled for the first time overlaps the prompt's prefill (AsyncEngine.generate): the idle engine
computes the prompt's full blocks into the prefix cache while xgrammar compiles, the request starts from them,
and its answer is the one it gives without the overlap. A grammar already compiled queues nothing."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from velollm.engine.async_engine import AsyncEngine
from velollm.sampling_params import SamplingParams, StructuredOutput

from .helpers import make_engine, random_prompts

SCHEMA = StructuredOutput("json_schema", json.dumps({"type": "object", "properties": {"a": {"type": "integer"}},
                                                     "required": ["a"]}))


def _params() -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=12, structured_output=SCHEMA)


def _run(engine: AsyncEngine, prompt: list[int]) -> tuple[list[int], int]:
    async def main():
        return [d async for d in engine.generate(prompt, _params())]

    deltas = asyncio.run(main())
    return [t for d in deltas for t in d.token_ids], deltas[-1].num_cached_tokens


@pytest.fixture
def slow_compile_engine(llama_folder):
    """An AsyncEngine whose compiles wait until the engine has prefilled in the background (at most 30 s), as a
    compile that takes seconds would, unless `waits[0]` is set False; `compiled` counts the real compiles (True:
    off the engine thread)."""
    engine = AsyncEngine(make_engine(llama_folder))
    manager = engine.engine.structured_output
    compile_spec, compiled, waits = manager._compile, [], [True]

    def slow(spec):
        deadline = time.monotonic() + 30
        while waits[0] and engine.engine.scheduler.num_prefills == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        compiled.append(threading.current_thread() is not engine._thread)
        return compile_spec(spec)

    manager._compile = slow  # type: ignore[method-assign]
    engine.start()
    yield engine, compiled, waits
    engine.shutdown()


def test_the_prompt_is_prefilled_while_its_grammar_compiles(slow_compile_engine, llama_folder):
    engine, compiled, _ = slow_compile_engine
    prompt = random_prompts([600], seed=11)[0]
    tokens, cached = _run(engine, prompt)
    stats = engine.stats()
    assert compiled == [True]  # compiled once, off the engine thread
    assert stats.num_turn_prefills == 1 and stats.num_turn_prefill_tokens == 592  # 37 full blocks of 16
    assert cached == 592  # the request started from the blocks prefilled meanwhile

    cold = AsyncEngine(make_engine(llama_folder, enable_prefix_caching=False))
    cold.start()
    try:
        cold_tokens, cold_cached = _run(cold, prompt)
    finally:
        cold.shutdown()
    assert tokens == cold_tokens and cold_cached == 0  # the same answer as a cold engine's

    other = random_prompts([600], seed=12)[0]
    _, cached = _run(engine, other)  # the grammar is compiled now: no background prefill for this one
    stats = engine.stats()
    assert compiled == [True] and stats.num_turn_prefills == 1 and cached == 0
    assert stats.num_allocated_blocks == 0


def test_a_busy_engine_queues_no_prefill_for_a_compile(slow_compile_engine):
    """Requests are running: the prefill would run only after them (background prefills wait for an idle
    engine), so none is queued; the compile still happens off the engine thread."""
    engine, compiled, waits = slow_compile_engine
    waits[0] = False  # no prefill to wait for
    busy, prompt = random_prompts([40, 600], seed=13)

    async def main():
        running = engine.generate(busy, SamplingParams(temperature=0.0, max_tokens=400, ignore_eos=True))
        await running.__anext__()  # the busy request runs
        constrained = asyncio.ensure_future(_collect(engine, prompt))
        rest = [d async for d in running]
        return rest, await constrained

    rest, deltas = asyncio.run(main())
    assert rest[-1].finished and deltas[-1].finished
    deadline = time.monotonic() + 30  # a queued prefill would run now, the engine being idle
    while engine.engine.has_unfinished_requests() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert compiled == [True] and engine.stats().num_turn_prefills == 0 and engine.stats().num_allocated_blocks == 0


async def _collect(engine: AsyncEngine, prompt: list[int]) -> list:
    return [d async for d in engine.generate(prompt, _params())]
