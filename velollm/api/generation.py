"""GenerationStream: the engine requests behind one API request (n choices, several prompts), merged.

Each choice is pumped by its own task into one queue, so choices advance together. `start()` waits
until every choice has produced its first delta, which is when the engine has accepted it: errors it
raises up front (ContextOverflow, Overloaded) surface before any HTTP status is sent. Closing the
stream cancels the pumps; the engine aborts a request whose iterator is cancelled and frees its blocks.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from velollm.api.lease import EngineLease
from velollm.api.thinking import Thinking
from velollm.errors import InvalidRequest
from velollm.outputs import PromptLogprobs, RequestDelta
from velollm.reasoning import PlannedStream
from velollm.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


@dataclass
class ChoiceState:
    """What one choice has produced so far."""

    index: int
    text: str = ""  # the answer (content); the thinking, split off, is in `reasoning`
    reasoning: str = ""
    num_reasoning_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, float]] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    num_cached_tokens: int = 0
    # The prompt its answer came from when that is not the request's: a tool-call retry's (the request's
    # prompt, the failed answer and the corrective message), which usage and prompt_eval_count then count.
    num_prompt_tokens: int | None = None
    t_first: float | None = None  # perf_counter of the first and the latest delta
    t_last: float | None = None
    prompt_logprobs: PromptLogprobs | None = None  # the prompt's, when asked for (echo + logprobs, prompt_logprobs)

    def add(self, delta: RequestDelta, now: float) -> None:
        if self.t_first is None:
            self.t_first = now
        self.t_last = now
        self.text += delta.text
        self.reasoning += delta.reasoning
        self.token_ids.extend(delta.token_ids)
        if delta.logprobs:
            self.logprobs.extend(delta.logprobs)
        self.finish_reason = delta.finish_reason
        self.stop_reason = delta.stop_reason
        self.num_cached_tokens = delta.num_cached_tokens or self.num_cached_tokens
        if delta.prompt_logprobs is not None:
            self.prompt_logprobs = delta.prompt_logprobs


@dataclass(frozen=True)
class EngineCall:
    """One engine request: the prompt tokens and how to sample them."""

    prompt_token_ids: list[int]
    params: SamplingParams


def engine_params(params: SamplingParams, max_tokens: int, seed_offset: int = 0, *, stream: bool = True) -> SamplingParams:
    """Params for one engine request: the clamped max_tokens, for choice i of n seed + i, and text per
    step only when the answer is streamed (a whole answer is detokenized once, at its end)."""
    seed = params.seed + seed_offset if params.seed is not None else None
    if seed is not None and seed >= 2**64:  # wraps like the 64-bit seed it is (seed 2**64 - 1 with n > 1)
        seed -= 2**64
    return replace(params, n=1, max_tokens=max_tokens, min_tokens=min(params.min_tokens, max_tokens), seed=seed,
                   output_kind="delta" if stream else "final_only")


def check_queue_fits(engine: Any, num_sequences: int, param: str) -> None:
    """More engine requests than the queue holds can never all be admitted: a 400 saying the limit, before
    any tokenizing (a 503 + Retry-After is for a queue that is busy now and will drain)."""
    max_queue = getattr(engine, "max_queue", None)
    if isinstance(max_queue, int) and num_sequences > max_queue:
        raise InvalidRequest(f"this request needs {num_sequences} sequences (prompts x n); the server queues at "
                             f"most {max_queue} (--max-queue)", param=param)


_END = object()


def _without_output(delta: RequestDelta) -> RequestDelta:
    """The delta with nothing generated: a request for none ends by its length whatever the engine sampled."""
    finish_reason = "length" if delta.finish_reason not in (None, "abort") else delta.finish_reason
    return replace(delta, text="", token_ids=[], logprobs=None if delta.logprobs is None else [],
                   num_output_tokens=0, finish_reason=finish_reason, stop_reason=None)


class GenerationStream:
    """Merges the deltas of several engine requests; iterate for (choice index, delta).

    With `thinking`, each choice's text is split as it comes: deltas carry the answer in `text` and
    the thinking in `reasoning`."""

    def __init__(self, engine: Any, calls: list[EngineCall], request_id: str, thinking: Thinking | None = None,
                 *, keep_output: bool = True) -> None:
        """`keep_output` False: what the engine generates is not part of the answer (echo with max_tokens 0: the
        prompt back with its logprobs; the engine samples one token, as it always does, and it is dropped here)."""
        self.engine = engine
        self.keep_output = keep_output
        self.calls = calls
        self.request_id = request_id
        self.thinking = thinking
        self.choices = [ChoiceState(i) for i in range(len(calls))]
        self._splits: list[PlannedStream] = [thinking.stream() for _ in calls] if thinking is not None else []
        self._queue: asyncio.Queue = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._buffer: list[tuple[int, Any, float]] = []
        self._open = len(calls)
        # Called with the choices once, when every choice ended by itself (not aborted, no error): as the
        # iteration ends, else at close.
        self.on_finished: list[Callable[[list[ChoiceState]], None]] = []
        # An on-demand model stays loaded (not unloaded by keep_alive or for another model) until
        # every stream of the request is closed.
        self._lease = engine if isinstance(engine, EngineLease) else None
        if self._lease is not None:
            self._lease.hold()

    async def start(self) -> None:
        """Submits every call; returns once each has produced a first delta, or raises its error."""
        self._tasks = [asyncio.create_task(self._pump(i, call)) for i, call in enumerate(self.calls)]
        started: set[int] = set()
        try:
            while len(started) < len(self.calls):
                entry = await self._queue.get()
                index, item, _ = entry
                if isinstance(item, BaseException):
                    raise item
                started.add(index)
                self._buffer.append(entry)
        except BaseException:
            await self.aclose()
            raise

    async def __aiter__(self) -> AsyncIterator[tuple[int, RequestDelta]]:
        while self._open:
            index, item, t = self._buffer.pop(0) if self._buffer else await self._queue.get()
            if item is _END:
                self._open -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            if self._splits:
                item = self._split(index, item)
            if not self.keep_output:
                item = _without_output(item)
            self.choices[index].add(item, t)
            yield index, item
        # Every choice ended: the hooks run now, before the caller sends the end of the answer (a client
        # that sends its next turn on [DONE] finds the turn remembered, or being remembered: the fit waits for
        # it, api.remembering), not at close.
        self._finished()

    def _split(self, index: int, delta: RequestDelta) -> RequestDelta:
        split = self._splits[index]
        piece = split.feed(delta.text, delta.token_ids)
        if delta.finished:
            piece += split.finish()
            self.choices[index].num_reasoning_tokens = split.num_reasoning_tokens
        return replace(delta, text=piece.content, reasoning=piece.reasoning)

    async def collect(self) -> list[ChoiceState]:
        async for _ in self:
            pass
        return self.choices

    async def aclose(self) -> None:
        """Cancels unfinished engine requests (the engine aborts them and frees their blocks)."""
        for task in self._tasks:
            task.cancel()  # synchronous first: it must happen even if our own awaits get cancelled
        try:
            if self._tasks:
                import anyio

                with anyio.CancelScope(shield=True):
                    await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            lease, self._lease = self._lease, None
            if lease is not None:
                lease.drop()
            self._finished()

    def _finished(self) -> None:
        hooks, self.on_finished = self.on_finished, []
        if not all(c.finish_reason not in (None, "abort") for c in self.choices):
            return
        for hook in hooks:
            try:
                hook(self.choices)
            except Exception:  # bookkeeping after the answer went out must not fail the request
                logger.exception("a finished-stream hook failed")

    async def _pump(self, index: int, call: EngineCall) -> None:
        try:
            iterator = self.engine.generate(call.prompt_token_ids, call.params,
                                            request_id=f"{self.request_id}-{index}")
            if inspect.isawaitable(iterator):
                iterator = await iterator
            try:
                async for delta in iterator:
                    self._queue.put_nowait((index, delta, time.perf_counter()))
            finally:
                close = getattr(iterator, "aclose", None)
                if close is not None:
                    await close()
            self._queue.put_nowait((index, _END, 0.0))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 (handed to the consumer, which maps it to the wire format)
            self._queue.put_nowait((index, exc, 0.0))
