"""ModelPool.prefetch and ModelPrefetcher with fake engines: free slots only, one load for a request that
arrives during a prefetch, unused predictions evicted first, a clean close during a prefetch."""

from __future__ import annotations

import asyncio
import threading
import time

from tests.proxy.test_proxy_model_pool import FakeEngines
from velollm.api.model_pool import ModelPool
from velollm.context.model_prefetch import ModelPrefetcher


async def names(name: str) -> str | None:
    return None if name == "upstream-only" else name


async def settle(prefetcher: ModelPrefetcher, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if prefetcher._task is None or prefetcher._task.done():
            return
        await asyncio.sleep(0.01)


async def test_prefetch_takes_a_free_slot_and_counts_as_used():
    engines = FakeEngines()
    pool = ModelPool(engines.load, max_loaded_models=2)
    prefetcher = ModelPrefetcher(pool, names)
    prefetcher.predict("a", "shown")
    prefetcher.predict("upstream-only", "shown")  # not loadable here: skipped
    await settle(prefetcher)
    assert engines.loads == ["a"] and pool.load_counts == {("a", "prefetch"): 1}
    assert pool.loaded()[0].expires_at is not None  # idle: its keep-alive clock runs
    async with pool.use("a"):
        pass
    assert engines.loads == ["a"] and pool.prefetch_counts == {("a", "used"): 1}
    await pool.close()


async def test_prefetch_never_evicts():
    engines = FakeEngines()
    pool = ModelPool(engines.load, max_loaded_models=1)
    async with pool.use("busy"):
        assert not await pool.prefetch("b")
    assert not await pool.prefetch("b")  # idle but loaded: still no free slot
    assert engines.loaded == {"busy"} and engines.loads == ["busy"]
    await pool.close()


async def test_a_request_during_a_prefetch_waits_for_that_load():
    engines = FakeEngines(load_seconds=0.3)
    pool = ModelPool(engines.load, max_loaded_models=1)
    prefetch = asyncio.ensure_future(pool.prefetch("a"))
    await asyncio.sleep(0.05)
    assert not pool.can_prefetch("b")  # one load at a time
    async with pool.use("a"):
        assert engines.loads == ["a"]
    assert await prefetch
    assert pool.prefetch_counts == {("a", "used"): 1} and pool.load_counts == {("a", "prefetch"): 1}
    await pool.close()


async def test_an_unused_prediction_is_evicted_first():
    engines = FakeEngines()
    pool = ModelPool(engines.load, max_loaded_models=2)
    async with pool.use("a"):
        pass
    assert await pool.prefetch("b")
    async with pool.use("c"):  # needs room: b (predicted, never used) goes, not a
        assert engines.loaded == {"a", "c"}
    assert pool.prefetch_counts == {("b", "unused"): 1}
    await pool.close()


async def test_close_during_a_prefetch_unloads_it():
    held = threading.Event()  # the load ends once the prefetcher is closed (a 0.1 s sleep raced a 0.3 s load)
    engines = FakeEngines(held=held)
    pool = ModelPool(engines.load, max_loaded_models=1)
    prefetcher = ModelPrefetcher(pool, names)
    prefetcher.predict("a", "shown")
    deadline = time.monotonic() + 30
    while engines.began != ["a"]:
        assert time.monotonic() < deadline, "the prefetch never started its load"
        await asyncio.sleep(0.01)
    await prefetcher.close()  # cancels the prefetcher; the load in its thread goes on
    assert engines.loads == []
    held.set()
    await pool.close()  # waits for it, then unloads it
    assert engines.loads == ["a"] and engines.loaded == set()
    prefetcher.predict("b", "shown")  # closed: ignored
    assert prefetcher._task.done()


async def test_disabled_prefetcher_loads_nothing():
    engines = FakeEngines()
    pool = ModelPool(engines.load, max_loaded_models=2)
    prefetcher = ModelPrefetcher(pool, names, enabled=False)
    prefetcher.predict("a", "shown")
    await asyncio.sleep(0.1)
    assert engines.loads == []
    await pool.close()


async def test_the_registry_loads_ahead_only_with_memory_to_spare():
    from velollm.api.on_demand import OnDemand
    from velollm.api.registry import ModelRegistry
    from velollm.errors import ModelNotFound

    engines = FakeEngines()

    def resolve(name: str) -> str:
        if name == "unknown":
            raise ModelNotFound(name)
        return name

    registry = ModelRegistry(None, OnDemand(resolve=resolve, load=engines.load, max_loaded_models=3,
                                            prefetch_room=lambda name: name != "huge"))
    registry.mark_ready()
    for name in ("huge", "unknown", "small"):
        registry.predict(name, "shown")
        await settle(registry.prefetcher)
    assert engines.loads == ["small"]
    await registry.close()
