"""Background responses (`background: true`): each one a task the server owns, and its stream events kept so that
a client can follow it from any point (`GET /v1/responses/{id}?stream=true&starting_after=N`).

A BackgroundRun holds one response's events as SSE frames, in order of `sequence_number`, and wakes the readers
following it. Memory is bounded: a run keeps at most `max_event_bytes` of frames (the oldest go first; a resume from
before what is kept is EventsGone), and a finished run is kept, for late readers, at most `keep_s` seconds and
among the last `keep_finished` (and `keep_bytes` in all) finished ones; after that its stored Response object is
what remains. The runs in flight are as many as the engine's queue admits (each holds an engine request or an
upstream stream). BackgroundRuns is the registry: start, look up, cancel, forget (a deleted response), and stop all
at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from velollm.responses.event_stream import sse_frame

logger = logging.getLogger(__name__)

MAX_EVENT_BYTES = 4 << 20  # a run's frames (about 25,000 text deltas)
KEEP_FINISHED = 64
KEEP_BYTES = 64 << 20  # the finished runs' frames, all together
KEEP_S = 600.0
FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")  # each holds the response's end


class EventsGone(LookupError):
    """The events after the asked sequence number are no longer held (the run's cap let the oldest go).
    `first_missing`: the sequence number of the first of them (where a reader's stream broke off)."""

    def __init__(self, message: str, first_missing: int) -> None:
        super().__init__(message)
        self.first_missing = first_missing


class BackgroundRun:
    """One background response: its events so far, the Response as it stands, and the task running it."""

    def __init__(self, response: dict[str, Any], max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.id: str = response["id"]
        self.response = response  # the last whole object: queued, then the final one
        self.snapshot: Callable[[], dict[str, Any]] = lambda: self.response  # mid-answer (ResponseEventStream's)
        self.max_event_bytes = max_event_bytes
        self.task: asyncio.Task[None] | None = None
        self.started = False  # the task has taken its first step (a task cancelled before it never runs its finally)
        self.done = False
        self.finishing = False  # the final event is out: a cancel now waits for it instead of cutting it
        self.stop_reason = "cancelled"  # why the task was cancelled: "cancelled" (the client) or "shutdown"
        self.finished_at = 0.0
        self.num_bytes = 0
        self._frames: list[bytes] = []  # from _frames[_head] on: the ones kept (dropped ones compacted away in bulk)
        self._head = 0
        self._first_seq = 0  # the sequence number of _frames[_head]
        self._wake = asyncio.Event()

    def add(self, event: dict[str, Any]) -> None:
        if event["type"] in FINAL_EVENTS:  # a GET by a reader that saw it finds that end (not the run mid-answer)
            self.response = event["response"]
            self.snapshot = lambda: self.response
        frame = sse_frame(event)
        self._frames.append(frame)
        self.num_bytes += len(frame)
        while self.num_bytes > self.max_event_bytes and len(self._frames) - self._head > 1:
            self.num_bytes -= len(self._frames[self._head])
            self._head, self._first_seq = self._head + 1, self._first_seq + 1
        if self._head > len(self._frames) // 2:  # amortized O(1) a frame, where list.pop(0) was O(n)
            del self._frames[:self._head]
            self._head = 0
        self._notify()

    def finish(self, response: dict[str, Any]) -> None:
        self.response, self.done, self.finished_at = response, True, time.monotonic()
        self.snapshot = lambda: self.response
        self._notify()

    def _notify(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    def check_resumable(self, starting_after: int | None) -> None:
        """EventsGone when the events after `starting_after` (from the first without it) are no longer held."""
        first = 0 if starting_after is None else max(starting_after + 1, 0)  # as frames reads it: none is below 0
        if first < self._first_seq:
            raise EventsGone(f"the events of response {self.id} before sequence number {self._first_seq} are no "
                             f"longer held; resume with a starting_after of {self._first_seq - 1} or more", first)

    async def frames(self, starting_after: int | None = None) -> AsyncIterator[bytes]:
        """The SSE frames after `starting_after` (all, without it), then each new one as it comes, until the run
        ends. EventsGone (raised before the first frame by check_resumable, or mid-way for a reader so slow that
        the cap let its next event go) when they are not held."""
        seq = 0 if starting_after is None else max(starting_after + 1, 0)
        while True:
            if seq < self._first_seq:
                self.check_resumable(seq - 1)
            wake = self._wake
            frames = self._frames[self._head + seq - self._first_seq:]
            for frame in frames:
                yield frame
            seq += len(frames)
            if seq >= self._first_seq + len(self._frames) - self._head:
                if self.done:
                    return
                await wake.wait()


class BackgroundRuns:
    """The server's background responses by id: those running, and the recently finished (see the module)."""

    def __init__(self, keep_finished: int = KEEP_FINISHED, keep_bytes: int = KEEP_BYTES,
                 keep_s: float = KEEP_S) -> None:
        self.keep_finished, self.keep_bytes, self.keep_s = keep_finished, keep_bytes, keep_s
        self._live: dict[str, BackgroundRun] = {}
        self._finished: OrderedDict[str, BackgroundRun] = OrderedDict()
        self._reserved: set[str] = set()  # queued rows being written, their runs not started yet

    def reserve(self, response_id: str) -> None:
        """A run about to start: its queued row is being written (`holds` says so from now on)."""
        self._reserved.add(response_id)

    def release(self, response_id: str) -> None:
        """A reservation whose run did not start (the queued row could not be written)."""
        self._reserved.discard(response_id)

    def holds(self, response_id: str) -> bool:
        """Whether this process has the run of `response_id` (about to start, running, or finished recently): a
        row of this process's queued or in progress without one has ended without its end being stored."""
        return response_id in self._reserved or self.get(response_id) is not None

    def start(self, run: BackgroundRun, work: Callable[[BackgroundRun], Coroutine[Any, Any, None]]) -> None:
        """Runs `work(run)` as a task of its own, not tied to the HTTP request that made it; `work` ends the run
        (`run.finish`), also when cancelled."""
        self._prune()
        self._reserved.discard(run.id)
        self._live[run.id] = run
        run.task = asyncio.create_task(self._run(run, work), name=f"background response {run.id}")

    async def _run(self, run: BackgroundRun, work: Callable[[BackgroundRun], Coroutine[Any, Any, None]]) -> None:
        run.started = True
        try:
            await work(run)
        except Exception:  # no request to answer it: said in the log; the run is ended below, its readers let go
            logger.exception("background response %s failed", run.id)
        finally:
            if not run.done:  # work failed to end it (a bug): readers must not wait forever
                run.finish(run.response)
            self._live.pop(run.id, None)
            self._finished[run.id] = run
            self._prune()

    @property
    def num_live(self) -> int:
        """The runs queued or in progress (/metrics' velollm_background_responses)."""
        return len(self._live)

    def get(self, response_id: str) -> BackgroundRun | None:
        """A run still going, or one finished recently (its events still held)."""
        self._prune()
        return self._live.get(response_id) or self._finished.get(response_id)

    def forget(self, response_id: str) -> None:
        """Drops a run that has ended (DELETE /v1/responses/{id}): its events, output included, are not replayed
        to a later `GET ...?stream=true`, and a GET or cancel of it is the store's 404."""
        self._finished.pop(response_id, None)
        self._live.pop(response_id, None)

    async def cancel(self, run: BackgroundRun, reason: str = "cancelled") -> None:
        """Cancels a run in flight and waits until it has ended (stored, its engine request aborted). One whose
        final event is out already is let finish: it is not cancelled."""
        task = run.task
        if task is None or task.done():
            return
        while not run.started:  # cancelled before its first step, it would end without closing its engine request
            await asyncio.sleep(0)
        if not run.finishing:
            run.stop_reason = reason
            task.cancel()
        await asyncio.wait({task})  # not cancelled with this caller: the run ends either way

    async def wait(self) -> None:
        """Until every run now in flight has ended."""
        tasks = {run.task for run in self._live.values() if run.task is not None}
        if tasks:
            await asyncio.wait(tasks)

    async def stop_all(self) -> None:
        """At shutdown: every run in flight ends as `failed` (the server stopped), stored so, not left in progress."""
        runs = list(self._live.values())
        await asyncio.gather(*(self.cancel(run, "shutdown") for run in runs))

    def _prune(self) -> None:
        now = time.monotonic()
        num_bytes = sum(run.num_bytes for run in self._finished.values())
        while self._finished:
            oldest = next(iter(self._finished.values()))
            if (len(self._finished) <= self.keep_finished and num_bytes <= self.keep_bytes
                    and now - oldest.finished_at <= self.keep_s):
                return
            num_bytes -= oldest.num_bytes
            del self._finished[oldest.id]
