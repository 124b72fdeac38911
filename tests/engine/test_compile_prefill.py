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
    """An AsyncEngine whose first compile of each spec waits until the engine has prefilled in the background
    (at most 30 s), as a compile that takes seconds would; `compiled` counts the real compiles."""
    engine = AsyncEngine(make_engine(llama_folder))
    manager = engine.engine.structured_output
    compile_spec, compiled = manager._compile, []

    def slow(spec):
        deadline = time.monotonic() + 30
        while engine.engine.scheduler.num_prefills == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        compiled.append(threading.current_thread() is not engine._thread)
        return compile_spec(spec)

    manager._compile = slow  # type: ignore[method-assign]
    engine.start()
    yield engine, compiled
    engine.shutdown()


def test_the_prompt_is_prefilled_while_its_grammar_compiles(slow_compile_engine, llama_folder):
    engine, compiled = slow_compile_engine
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
