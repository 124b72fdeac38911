"""Requests before prefetches (velollm.api.load_turns, ModelPool): a running prefetch is stopped at its next
tensor when a request for another model comes (its half-built model freed, counted as cancelled) or the server
closes, a prefetch that has not started yields its turn, and a request for the prefetched model itself keeps
that load. The prefetcher queues a stopped prediction again, once, when the request's load is done and a slot is
free (never evicting, behind newer predictions within MAX_PENDING)."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref

import pytest

from velollm.api.load_turns import LoadTurns
from velollm.api.model_pool import ModelPool, PrefetchCancelled
from velollm.context.model_prefetch import MAX_PENDING, ModelPrefetcher
from velollm.engine.loader.load_stop import check_stop

NUM_TENSORS = 60
TENSOR_S = 0.05  # a whole load: 3 s


class Weights:
    """What a half-built model holds (its freeing is what the test checks)."""


class StoppableEngines:
    """Loads that stream NUM_TENSORS "tensors" and stop where the real weight stream does (check_stop)."""

    def __init__(self, slow: frozenset[str] = frozenset({"a"})) -> None:
        self.slow = slow
        self.loaded: set[str] = set()
        self.loads: list[str] = []
        self.half_built: list[weakref.ref[Weights]] = []
        self.ended: list[tuple[str, int]] = []  # (model, tensors streamed) of each load as it finished or stopped
        self.lock = threading.Lock()

    def load(self, name: str) -> "Engine":
        weights = [Weights()]
        self.half_built.append(weakref.ref(weights[0]))
        try:
            for _ in range(NUM_TENSORS if name in self.slow else 1):
                check_stop()
                weights.append(Weights())
                time.sleep(TENSOR_S)
        finally:
            self.ended.append((name, len(weights) - 1))
        with self.lock:
            self.loaded.add(name)
            self.loads.append(name)
        return Engine(self, name, weights)


class Engine:
    def __init__(self, owner: StoppableEngines, name: str, weights: list[Weights]) -> None:
        self.owner, self.name, self.weights = owner, name, weights

    def shutdown(self) -> None:
        with self.owner.lock:
            self.owner.loaded.discard(self.name)


async def same_name(name: str) -> str:
    return name


async def until(condition, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def started_loading(pool: ModelPool, name: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if name in pool._loading and pool._turns._holder is not None:
            await asyncio.sleep(3 * TENSOR_S)  # some tensors in
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} did not start loading")


@pytest.mark.parametrize("max_loaded_models", [1, 2])
async def test_a_request_for_another_model_stops_a_running_prefetch(max_loaded_models):
    engines = StoppableEngines()
    pool = ModelPool(engines.load, max_loaded_models=max_loaded_models)
    prefetch = asyncio.ensure_future(pool.prefetch("a"))
    await started_loading(pool, "a")
    async with pool.use("b"):
        # b did not wait for the prefetch's whole load: a stopped half-way. Counted in tensors, not seconds: what
        # the stop costs after a's last tensor (collecting what it built) grows with the heap and the CPU's load.
        assert engines.ended[0][0] == "a" and engines.ended[0][1] < NUM_TENSORS // 2, engines.ended
        assert engines.loaded == {"b"}
    with pytest.raises(PrefetchCancelled):  # what tells the prefetcher to queue it again
        await prefetch
    assert pool.prefetch_counts == {("a", "cancelled"): 1} and pool.load_counts == {("b", "cold"): 1}
    assert [e.name for e in pool.loaded()] == ["b"]
    assert engines.half_built[0]() is None  # what the stopped load had built is gone
    await pool.close()


async def test_a_request_for_the_prefetched_model_keeps_that_load():
    engines = StoppableEngines()
    pool = ModelPool(engines.load, max_loaded_models=2)
    prefetch = asyncio.ensure_future(pool.prefetch("a"))
    await started_loading(pool, "a")
    wants_a = asyncio.ensure_future(pool.acquire("a"))
    await asyncio.sleep(0.05)
    async with pool.use("b"):  # the load of a is a request's now: b waits for it, then loads
        assert engines.loads == ["a", "b"]
    await wants_a
    pool.release("a")
    assert await prefetch
    assert pool.prefetch_counts == {("a", "used"): 1} and ("a", "cancelled") not in pool.prefetch_counts
    await pool.close()


async def test_a_stopped_prediction_is_queued_again_once_the_request_load_ends():
    engines = StoppableEngines()
    pool = ModelPool(engines.load, max_loaded_models=2)
    prefetcher = ModelPrefetcher(pool, same_name)
    prefetcher.predict("a", "shown")
    await started_loading(pool, "a")
    async with pool.use("b"):
        assert engines.ended[0][0] == "a" and engines.ended[0][1] < NUM_TENSORS // 2, engines.ended  # a stopped
    await until(lambda: prefetcher._task.done())
    assert engines.loads == ["b", "a"] and engines.loaded == {"a", "b"}  # a slot was free: a loaded ahead after all
    assert pool.prefetch_counts == {("a", "cancelled"): 1}
    assert pool.load_counts == {("b", "cold"): 1, ("a", "prefetch"): 1}
    await prefetcher.close()
    await pool.close()


async def test_a_prediction_stopped_twice_is_dropped_until_predicted_anew():
    engines = StoppableEngines()
    pool = ModelPool(engines.load, max_loaded_models=3)
    prefetcher = ModelPrefetcher(pool, same_name)
    prefetcher.predict("a", "shown")
    await started_loading(pool, "a")
    async with pool.use("b"):
        pass
    await started_loading(pool, "a")  # queued again once b loaded
    async with pool.use("c"):
        pass
    await until(lambda: prefetcher._task.done())
    await asyncio.sleep(0.1)
    assert engines.loads == ["b", "c"] and pool.prefetch_counts == {("a", "cancelled"): 2}  # no third try
    assert pool.has_free_slot() and "a" not in engines.loaded
    prefetcher.predict("a", "shown")  # a new prediction: loaded ahead again
    await until(lambda: "a" in engines.loaded)
    await prefetcher.close()
    await pool.close()


async def test_a_stopped_prediction_waits_for_a_free_slot_and_never_evicts():
    engines = StoppableEngines()
    # b's keep_alive is 3 s: a stall of the 0.2 s below past a keep_alive of 0.5 s let a load first
    pool = ModelPool(engines.load, max_loaded_models=1, default_keep_alive=3.0)
    prefetcher = ModelPrefetcher(pool, same_name)
    pool.on_slot_freed = prefetcher.slot_freed  # as OnDemand wires it
    prefetcher.predict("a", "shown")
    await started_loading(pool, "a")
    async with pool.use("b"):
        await asyncio.sleep(0.3)
    await asyncio.sleep(0.2)
    assert engines.loads == ["b"] and engines.loaded == {"b"}  # b's slot is not taken while b is loaded
    await until(lambda: engines.loads == ["b", "a"], timeout=30)  # b's keep_alive ran out: its slot loads a ahead
    assert "b" not in engines.loaded and pool.prefetch_counts[("a", "cancelled")] == 1
    await prefetcher.close()
    await pool.close()


async def test_a_stopped_prediction_goes_behind_newer_ones_within_max_pending():
    engines = StoppableEngines(slow=frozenset({"a", "b"}))
    pool = ModelPool(engines.load, max_loaded_models=2)
    prefetcher = ModelPrefetcher(pool, same_name)
    prefetcher.predict("a", "shown")
    await started_loading(pool, "a")
    request = asyncio.ensure_future(pool.acquire("b"))  # stops a; b's load is slow too
    await asyncio.sleep(0.2)
    for i in range(MAX_PENDING):  # predictions made while b loads wait for it
        prefetcher.predict(f"p{i}", "shown")
    await request
    pool.release("b")
    await until(lambda: prefetcher._task.done())
    # The newest prediction took the free slot; a, queued behind MAX_PENDING newer ones, was dropped.
    assert engines.loads == ["b", f"p{MAX_PENDING - 1}"] and pool.prefetch_counts == {("a", "cancelled"): 1}
    await prefetcher.close()
    await pool.close()


async def test_a_prefetch_that_has_not_started_yields_its_turn():
    turns = LoadTurns()
    order: list[str] = []
    release_first = asyncio.Event()

    async def load(name: str, speculative: bool, hold: asyncio.Event | None = None) -> None:
        async with turns.turn(lambda: speculative) as stop:
            order.append(name)
            assert not stop.is_set()
            if hold is not None:
                await hold.wait()

    first = asyncio.ensure_future(load("request-1", False, release_first))
    await asyncio.sleep(0)
    queued = [asyncio.ensure_future(load("prefetch", True)), asyncio.ensure_future(load("request-2", False))]
    await asyncio.sleep(0.01)
    assert turns.num_waiting == 2
    release_first.set()
    await asyncio.gather(first, *queued)
    assert order == ["request-1", "request-2", "prefetch"]


async def test_a_running_prefetch_is_asked_to_stop_and_a_cancelled_waiter_leaves_the_queue():
    turns = LoadTurns()
    holding = asyncio.Event()
    done = asyncio.Event()
    stops: list[threading.Event] = []

    async def prefetch() -> None:
        async with turns.turn(lambda: True) as stop:
            stops.append(stop)
            holding.set()
            await done.wait()

    async def request(name: str) -> str:
        async with turns.turn(lambda: False):
            return name

    running = asyncio.ensure_future(prefetch())
    await holding.wait()
    gone = asyncio.ensure_future(request("gone"))
    await asyncio.sleep(0)
    assert stops[0].is_set()  # a request waits: the prefetch is asked to stop
    gone.cancel()
    waiting = asyncio.ensure_future(request("next"))
    await asyncio.sleep(0)
    done.set()
    assert await waiting == "next" and turns.num_waiting == 0
    await running


async def test_close_stops_a_running_prefetch():
    engines = StoppableEngines()
    pool = ModelPool(engines.load, max_loaded_models=2)
    prefetch = asyncio.ensure_future(pool.prefetch("a"))
    await started_loading(pool, "a")
    await pool.close()
    assert engines.ended == [("a", engines.ended[0][1])] and engines.ended[0][1] < NUM_TENSORS // 2  # stopped
    with pytest.raises(PrefetchCancelled):
        await prefetch
    assert engines.loaded == set() and pool.prefetch_counts == {("a", "cancelled"): 1}
