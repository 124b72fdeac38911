"""AsyncEngine: one engine thread stepping LLMEngine; per-request asyncio streams of deltas."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from velollm.config import EngineConfig
from velollm.engine.engine_stats import EngineSettings, EngineStats
from velollm.engine.llm_engine import LLMEngine
from velollm.errors import EngineDead, Overloaded, RequestFailed
from velollm.outputs import RequestDelta
from velollm.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue


class AsyncEngine:
    def __init__(self, engine: LLMEngine, served_name: str | None = None) -> None:
        self.engine = engine
        self.max_queue = engine.config.max_queue
        self.served_name = served_name or engine.source.info.name
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._wakeup = threading.Event()
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._dead: BaseException | None = None

    @classmethod
    def from_model(cls, model: str, config: EngineConfig, *, served_name: str | None = None,
                   cache_dir: str | None = None, allow_paths: bool = True) -> AsyncEngine:
        engine = LLMEngine.from_model(model, config, cache_dir=cache_dir, allow_paths=allow_paths)
        return cls(engine, served_name=served_name or model)

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def model_config(self):
        return self.engine.model_config

    @property
    def source(self):
        return self.engine.source

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    @property
    def device(self):
        return self.engine.device

    def memory_bytes(self) -> int:
        return self.engine.memory_bytes()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="velollm-engine", daemon=True)
            self._thread.start()

    def shutdown(self) -> None:
        self._stop_thread()
        self.engine.close()

    def sleep(self) -> None:
        """The engine thread stopped and the KV cache released; the weights stay (see LLMEngine.sleep)."""
        self._stop_thread()
        self.engine.sleep()

    def wake(self) -> None:
        self.engine.wake()
        self._stopping = False
        self.start()

    def _stop_thread(self) -> None:
        self._stopping = True
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    @property
    def dead(self) -> str | None:
        """Why the engine thread died (an exception escaped its loop, or every step failed: EngineFailing), else
        None. A dead engine answers every request with EngineDead (503) and never comes back: the process needs
        a restart (or the model a reload, ModelPool)."""
        return None if self._dead is None else f"{type(self._dead).__name__}: {self._dead}"

    @property
    def num_waiting(self) -> int:
        return max(0, len(self._streams) - len(self.engine.scheduler.running))

    async def generate(self, prompt_token_ids: list[int], params: SamplingParams,
                       request_id: str | None = None) -> AsyncIterator[RequestDelta]:
        """Stream the request's deltas; leaving the loop early (or cancellation) aborts the request."""
        self._check_alive()
        self.engine.limits.validate(prompt_token_ids, params)
        if self.num_waiting >= self.max_queue:
            raise Overloaded(f"{self.num_waiting} requests are waiting (max_queue={self.max_queue})")
        if params.structured_output is not None:
            # Compile (cached) off the engine thread, so a new schema never stalls the batch.
            manager = await asyncio.to_thread(lambda: self.engine.structured_output)
            budget = self.engine.limits.output_budget(len(prompt_token_ids), params)
            scheduler = self.engine.scheduler
            if not (scheduler.waiting or scheduler.running or manager.is_compiled(params.structured_output, budget)):
                # A grammar seen for the first time can take seconds (xgrammar's compile grows with the schemas:
                # about 50 ms per tool of 20 fields): an idle engine computes the prompt's blocks into the prefix
                # cache meanwhile, so the request starts from them (time to first token: the longer of the two).
                # A busy one would run it only once idle again, after the request: nothing is queued then.
                self.prefill(prompt_token_ids, counted=False)
            await asyncio.to_thread(manager.compile, params.structured_output, budget)
        request_id = request_id or uuid.uuid4().hex
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue())
        with self._lock:  # under the lock _die takes: a stream is either failed by it or refused here
            self._check_alive()
            self._streams[request_id] = stream
        self._commands.put(("add", request_id, list(prompt_token_ids), params))
        self._wakeup.set()
        finished = False
        try:
            while True:
                item = await stream.queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            with self._lock:
                self._streams.pop(request_id, None)
            if not finished:
                self.abort(request_id)

    @property
    def prefix_caching(self) -> bool:
        """Whether a background prefill has a prefix cache to fill (else LLMEngine.add_prefill drops it)."""
        return self.engine.block_manager.enable_prefix_caching

    def prefill(self, prompt_token_ids: list[int], counted: bool = True) -> None:
        """Queue a background prefill (LLMEngine.add_prefill); nothing comes back. A dead engine ignores it."""
        if self._dead is None:
            self._commands.put(("prefill", None, list(prompt_token_ids), counted))
            self._wakeup.set()

    def _check_alive(self) -> None:
        if self._dead is not None:
            raise self._dead_error()

    def _dead_error(self) -> EngineDead:
        return EngineDead(f"the engine of {self.served_name!r} stopped ({self.dead}); restart the server")

    def abort(self, request_id: str) -> None:
        self._commands.put(("abort", request_id))
        self._wakeup.set()

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def settings(self) -> EngineSettings:
        return self.engine.settings()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 (the thread ends here: everything is reported, nothing re-raised)
            self._die(exc)

    def _die(self, exc: BaseException) -> None:
        """An exception escaped the loop (not a failed step, which fails its requests and goes on, unless steps
        keep failing: EngineFailing): every stream, in flight or queued, gets EngineDead; later requests are
        refused (`generate`)."""
        logger.critical("the engine thread of %r died; its requests fail with 503 from now on", self.served_name,
                        exc_info=exc)
        with self._lock:
            self._dead = exc
            request_ids = list(self._streams)
        for request_id in request_ids:
            self._deliver(request_id, self._dead_error())

    def _loop(self) -> None:
        while not self._stopping:
            self._drain_commands()
            if not self.engine.has_unfinished_requests():
                self._wakeup.wait(timeout=1.0)
                self._wakeup.clear()
                continue
            failed: Exception | None = None
            try:
                deltas = self.engine.step()
            except Exception as exc:  # answered below
                failed, deltas = exc, []
                if not isinstance(exc, RequestFailed):  # raised past the engine's own containment
                    logger.exception("engine step failed; aborting its requests")
                    self.engine.failures.num_failed_steps += 1
            # Before answering: the request whose step shows the engine cannot run gets EngineDead (503, which a
            # router retries elsewhere): EngineFailing ends the loop.
            self.engine.failures.check()
            if isinstance(failed, RequestFailed):  # the engine removed that request; the others run on
                self._deliver(failed.request_id, failed)
            elif failed is not None:  # a failed step must not hang its clients or leak blocks
                self._fail_all(failed)
            self._dispatch(deltas)

    def _drain_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if command[0] == "prefill":
                self.engine.add_prefill(command[2], command[3])
            elif command[0] == "add":
                _, request_id, prompt_token_ids, params = command
                if request_id not in self._streams:
                    continue  # the client left before the engine saw its request
                try:
                    self.engine.add_request(prompt_token_ids, params, request_id)
                except Exception as exc:  # noqa: BLE001 (the request's own failure, delivered to it)
                    self._deliver(request_id, exc)
            else:
                self.engine.abort_request(command[1])

    def _fail_all(self, exc: Exception) -> None:
        for request_id in list(self.engine.requests):
            self.engine.abort_request(request_id)
            self._deliver(request_id, RuntimeError(f"engine step failed: {exc}"))
        self.engine.abort_prefills()

    def _dispatch(self, deltas: list[RequestDelta]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, RequestDelta]]] = {}
        with self._lock:
            for delta in deltas:
                stream = self._streams.get(delta.request_id)
                if stream is not None:
                    by_loop.setdefault(stream.loop, []).append((stream.queue, delta))
        for loop, items in by_loop.items():
            loop.call_soon_threadsafe(_put_all, items)

    def _deliver(self, request_id: str, item: object) -> None:
        with self._lock:
            stream = self._streams.get(request_id)
        if stream is not None:
            stream.loop.call_soon_threadsafe(stream.queue.put_nowait, item)


def _put_all(items: list[tuple[asyncio.Queue, RequestDelta]]) -> None:
    for q, delta in items:
        q.put_nowait(delta)
