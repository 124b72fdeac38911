"""Continuous batching: decodes first, then chunked prefill under a token budget; preemption by recompute.

Background prefills (`add_prefill`: a chat's next-turn prefix computed into the prefix cache while the user
types, or a prompt while its grammar compiles) run only when no request waits or runs, one chunk of at most
PREFILL_CHUNK tokens a step: a request that arrives waits for the chunk in progress at most, then the prefill
gives its blocks back (its full blocks stay cached, evictable) and resumes, from the cache, once the engine is
idle again. One that finds no free
blocks is dropped, as are the oldest beyond MAX_PREFILLS."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

from velollm.config import SchedulerConfig
from velollm.engine.block_manager import BlockManager
from velollm.engine.request import Request, RequestStatus

logger = logging.getLogger(__name__)

PREFILL_CHUNK = 512  # tokens of a background prefill per step: what a request arriving meanwhile may wait for
MAX_PREFILLS = 4  # background prefills queued; the oldest is dropped for a new one


@dataclass
class ScheduledBatch:
    """The contract between scheduler and model runner: who runs, and how many tokens each."""

    requests: list[Request] = field(default_factory=list)
    num_scheduled_tokens: list[int] = field(default_factory=list)
    cached_blocks: list[int] = field(default_factory=list)  # blocks the step put in the prefix cache (update)

    def samples(self, index: int) -> bool:
        """Whether this step reaches the end of the request's tokens, so its logits are sampled."""
        request = self.requests[index]
        if request.prefill_only:
            return False
        return request.num_computed_tokens + self.num_scheduled_tokens[index] == request.num_tokens_with_placeholders


class Scheduler:
    def __init__(self, config: SchedulerConfig, block_manager: BlockManager) -> None:
        self.config = config
        self.block_manager = block_manager
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        # Requests of a failed step, each retried alone (in order) until it samples, so that a failure one
        # request causes fails that request only.
        self.suspects: deque[Request] = deque()
        self.num_preemptions = 0
        self.prefills: deque[Request] = deque()  # background prefills, the head possibly holding blocks
        self.num_prefills = self.num_prefill_tokens = self.num_dropped_prefills = 0

    def add(self, request: Request) -> None:
        self.waiting.append(request)

    def add_prefill(self, request: Request) -> None:
        """Compute `request`'s full prompt blocks into the prefix cache when the engine is idle."""
        request.prefill_only = True
        self.prefills.append(request)
        while len(self.prefills) > MAX_PREFILLS:
            self._drop_prefill(self.prefills[0])

    def find_prefill(self, request_id: str) -> Request | None:
        return next((r for r in self.prefills if r.request_id == request_id), None)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running or self.prefills)

    def schedule(self) -> ScheduledBatch:
        if self.suspects:
            return self._schedule_suspect(self.suspects[0])
        batch = ScheduledBatch()
        budget = self.config.max_num_batched_tokens
        if self.waiting or self.running:
            self._pause_prefill()
            budget = self._schedule_running(batch, budget, self.running)
            self._schedule_waiting(batch, budget)
        else:
            self._schedule_prefill(batch, min(budget, PREFILL_CHUNK))
        return batch

    def _pause_prefill(self) -> None:
        """A request is here: the running prefill gives its blocks back (its full ones stay cached)."""
        if self.prefills and self.prefills[0].status is RequestStatus.RUNNING:
            request = self.prefills[0]
            self._count_prefilled(request)
            self.block_manager.free(request)
            request.status = RequestStatus.WAITING
            request.num_cached_tokens = -1

    def _schedule_prefill(self, batch: ScheduledBatch, budget: int) -> None:
        while self.prefills:
            request = self.prefills[0]
            if request.num_cached_tokens < 0:
                request.num_computed_tokens = self.block_manager.match_prefix(request)
                request.num_cached_tokens = request.num_computed_tokens
            num_new = min(self._prefill_end(request) - request.num_computed_tokens, budget)
            if num_new <= 0:  # cached already
                self._end_prefill(request)
                continue
            if not self.block_manager.allocate(request, request.num_computed_tokens + num_new):
                self._drop_prefill(request)  # memory pressure: a prefill never waits for blocks
                continue
            request.status = RequestStatus.RUNNING
            batch.requests.append(request)
            batch.num_scheduled_tokens.append(num_new)
            return

    def _prefill_end(self, request: Request) -> int:
        """The prompt's full blocks: only those are cached."""
        return request.num_prompt_tokens // self.block_manager.block_size * self.block_manager.block_size

    def _end_prefill(self, request: Request) -> None:
        self.num_prefills += request.counted
        self._count_prefilled(request)
        self.finish(request)

    def _count_prefilled(self, request: Request) -> None:
        """The tokens a prefill computed since it last took blocks (not those it found cached)."""
        if request.counted:
            self.num_prefill_tokens += request.num_computed_tokens - max(0, request.num_cached_tokens)

    def _drop_prefill(self, request: Request) -> None:
        self.num_dropped_prefills += request.counted
        self.finish(request)

    def quarantine(self, requests: list[Request]) -> None:
        """A step over `requests` failed: roll them back (their KV is recomputed) and retry each alone."""
        # not worth a retry: dropped (not one that had ended: an async step's last chunk ends it at launch)
        for request in [r for r in requests if r.prefill_only and not r.finished]:
            self._drop_prefill(request)
        requests = [r for r in requests if not r.prefill_only]
        for request in reversed(requests):
            if request.status is RequestStatus.RUNNING:
                self._requeue(request)
        self.suspects.extend(r for r in requests if r not in self.suspects and not r.finished)

    def cleared(self, batch: ScheduledBatch, sampled: bool) -> None:
        """A step succeeded: a suspect that ran alone and sampled is trusted again."""
        if sampled and self.suspects and batch.requests == [self.suspects[0]]:
            self.suspects.popleft()

    def _schedule_suspect(self, request: Request) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.config.max_num_batched_tokens
        if request.status is RequestStatus.RUNNING:
            self._schedule_running(batch, budget, [request])
        else:
            self.waiting.remove(request)
            self.waiting.appendleft(request)
            self._schedule_waiting(batch, budget, max_requests=1)
        if not batch.requests:  # cannot run alone now (blocks held by others): back to normal batching
            self.suspects.clear()
            return self.schedule()
        return batch

    def _schedule_running(self, batch: ScheduledBatch, budget: int, candidates: list[Request]) -> int:
        # Decodes (one token each) before running chunked prefills, in arrival order. A decode whose input is
        # a placeholder (sampled by the step still on the device) is scheduled like any other.
        ordered = sorted(candidates, key=lambda r: (r.num_tokens_with_placeholders - r.num_computed_tokens > 1,
                                                    r.arrival_time))
        for request in ordered:
            if request.status is not RequestStatus.RUNNING or budget == 0:
                continue
            num_new = min(request.num_tokens_with_placeholders - request.num_computed_tokens, budget)
            while not self.block_manager.allocate(request, request.num_computed_tokens + num_new):
                victim = self._pick_victim(request, batch)
                self._preempt(victim)
                if victim is request:
                    break
            if request.status is RequestStatus.RUNNING:
                batch.requests.append(request)
                batch.num_scheduled_tokens.append(num_new)
                budget -= num_new
        return budget

    def _pick_victim(self, request: Request, batch: ScheduledBatch) -> Request:
        # The newest running request that is not already in this step's batch gives up its blocks.
        candidates = [r for r in self.running if r.status is RequestStatus.RUNNING and r not in batch.requests]
        return max(candidates, key=lambda r: r.arrival_time) if candidates else request

    def _preempt(self, request: Request) -> None:
        self._requeue(request)
        request.num_preemptions += 1
        self.num_preemptions += 1
        logger.debug("preempted %s (recompute %d tokens)", request.request_id, request.num_tokens)

    def _requeue(self, request: Request) -> None:
        """Back to the head of the queue without KV: it is recomputed (prompt and output so far)."""
        self.block_manager.free(request)
        request.status = RequestStatus.WAITING
        request.num_cached_tokens = -1
        self.running.remove(request)
        self.waiting.appendleft(request)

    def _schedule_waiting(self, batch: ScheduledBatch, budget: int, max_requests: int | None = None) -> None:
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            if max_requests is not None and len(batch.requests) >= max_requests:
                break
            request = self.waiting[0]
            if request.num_cached_tokens < 0:
                # Prompt logprobs need every prompt position run: the cached prefix is computed again (the
                # request's blocks are its own; the cached ones stay for others). Once they are all gathered,
                # a preempted request resumes from the cache like any other.
                cached = 0 if request.needs_prompt_logits else self.block_manager.match_prefix(request)
                request.num_computed_tokens = request.num_cached_tokens = cached
            num_new = min(request.num_tokens - request.num_computed_tokens, budget)
            if not self.block_manager.allocate(request, request.num_computed_tokens + num_new):
                # Alone, a smaller chunk is the way forward; otherwise wait for running requests to finish.
                num_new = self._fit_chunk(request, num_new) if not self.running and not batch.requests else 0
                if num_new == 0:
                    self.block_manager.free(request)  # do not sit on prefix blocks while waiting
                    request.num_cached_tokens = -1
                    break
            self.waiting.popleft()
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            batch.requests.append(request)
            batch.num_scheduled_tokens.append(num_new)
            budget -= num_new

    def _fit_chunk(self, request: Request, num_new: int) -> int:
        free_tokens = (len(request.block_table) + self.block_manager.num_free_blocks) * self.block_manager.block_size
        num_new = min(num_new, free_tokens - request.num_computed_tokens)
        if num_new <= 0 or not self.block_manager.allocate(request, request.num_computed_tokens + num_new):
            return 0
        return num_new

    def update(self, batch: ScheduledBatch) -> None:
        """Advance computed-token counts after the model ran; cache the blocks that filled up."""
        for request, num_new in zip(batch.requests, batch.num_scheduled_tokens):
            request.num_computed_tokens += num_new
            batch.cached_blocks += self.block_manager.cache_full_blocks(request)
            if request.prefill_only and request.num_computed_tokens >= self._prefill_end(request):
                self._end_prefill(request)

    def finish(self, request: Request) -> None:
        if request.prefill_only:
            if request in self.prefills:
                self.prefills.remove(request)
        elif request.status is RequestStatus.RUNNING:
            self.running.remove(request)
        elif request.status is RequestStatus.WAITING:
            self.waiting.remove(request)
        request.status = RequestStatus.FINISHED
        self.block_manager.free(request)
        if request in self.suspects:
            self.suspects.remove(request)
