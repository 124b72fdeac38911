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
from velollm.engine.request import RequestStatus
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
    """An AsyncEngine whose compiles wait until `expected[0]` background prefills (default 1) have been queued
    and have ended (at most 30 s), as a compile that takes seconds would. Yields (engine, compiled, prefills,
    expected): `compiled` one entry per real compile (True: off the engine thread), `prefills` the background
    prefills queued (LLMEngine.add_prefill)."""
    engine = AsyncEngine(make_engine(llama_folder))
    manager = engine.engine.structured_output
    compile_spec, compiled, prefills, expected = manager._compile, [], [], [1]
    add_prefill = engine.engine.add_prefill

    def recorded(prompt_token_ids, counted=True):
        request = add_prefill(prompt_token_ids, counted)
        prefills.append(request)
        return request

    def slow(spec):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (len(prefills) < expected[0] or
                                               any(r.status is not RequestStatus.FINISHED for r in prefills)):
            time.sleep(0.01)
        compiled.append(threading.current_thread() is not engine._thread)
        return compile_spec(spec)

    engine.engine.add_prefill = recorded  # type: ignore[method-assign]
    manager._compile = slow  # type: ignore[method-assign]
    engine.start()
    yield engine, compiled, prefills, expected
    engine.shutdown()


def test_the_prompt_is_prefilled_while_its_grammar_compiles(slow_compile_engine, llama_folder):
    engine, compiled, prefills, _ = slow_compile_engine
    prompt = random_prompts([600], seed=11)[0]
    tokens, cached = _run(engine, prompt)
    stats = engine.stats()
    assert compiled == [True]  # compiled once, off the engine thread
    [prefill] = prefills
    assert prefill.prompt_token_ids == prompt and not prefill.counted
    assert cached == 592  # the request started from the blocks prefilled meanwhile (37 full blocks of 16)
    assert stats.num_turn_prefills == stats.num_turn_prefill_tokens == 0  # not a chat turn's prefill

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
    assert compiled == [True] and len(prefills) == 1 and cached == 0
    assert stats.num_allocated_blocks == 0


def test_a_busy_engine_queues_no_prefill_for_a_compile(slow_compile_engine):
    """Requests are running: the prefill would run only after them (background prefills wait for an idle
    engine), so none is queued; the compile still happens off the engine thread."""
    engine, compiled, prefills, expected = slow_compile_engine
    expected[0] = 0  # none to wait for
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
    assert compiled == [True] and prefills == [] and engine.stats().num_allocated_blocks == 0


async def _collect(engine: AsyncEngine, prompt: list[int]) -> list:
    return [d async for d in engine.generate(prompt, _params())]


def test_other_requests_are_answered_while_a_grammar_compiles(llama_folder):
    """A compile that takes seconds (hundreds of tools) runs off the event loop and the engine thread: a plain
    request is answered in full while it is held; the same spec sent again is not compiled again."""
    engine = AsyncEngine(make_engine(llama_folder))
    manager = engine.engine.structured_output
    compile_spec, release, compiles, released = manager._compile, threading.Event(), [], []

    def held(spec):  # until the plain request is answered (on the event loop: never, so at most 10 s)
        compiles.append(spec)
        released.append(release.wait(10))
        return compile_spec(spec)

    manager._compile = held  # type: ignore[method-assign]
    engine.start()
    first_prompt, plain_prompt, second_prompt = random_prompts([40, 30, 50], seed=14)

    async def main():
        constrained = asyncio.ensure_future(_collect(engine, first_prompt))
        while not compiles:
            await asyncio.sleep(0.01)
        plain = [d async for d in engine.generate(plain_prompt, SamplingParams(temperature=0.0, max_tokens=8))]
        release.set()
        return plain, await constrained, await _collect(engine, second_prompt)

    try:
        plain, first, second = asyncio.run(main())
    finally:
        release.set()
        engine.shutdown()
    assert plain[-1].finished and released == [True]  # answered while the compile was held
    assert first[-1].finished and second[-1].finished
    assert len(compiles) == 1  # the second request found it cached
