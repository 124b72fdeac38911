"""A failed step, pinned on one request: a batch that fails is rolled back and its requests are retried alone
(the scheduler's suspects); the one that fails alone is removed and raised as RequestFailed. Steps failed in a row
are counted, so that an engine that cannot run at all (a lost device, a sticky CUDA error) is told from bad
requests: past MAX_FAILED_STEPS a self-check runs one token through the model, and EngineFailing ends the engine
if that fails too."""

from __future__ import annotations

import logging

from velollm.engine.device import device_scope
from velollm.engine.model_runner import ModelRunner
from velollm.engine.output_processor import OutputProcessor
from velollm.engine.request import Request
from velollm.engine.scheduler import ScheduledBatch, Scheduler
from velollm.errors import RequestFailed

logger = logging.getLogger(__name__)

# Steps failed in a row (a suspect's retry alone not counted: StepFailures.num_failed_steps) before the engine
# checks itself. One bad request fails one step (alone, or a batch and then its own retry); a second bad request at
# once makes two; a third in a row with nothing succeeding between is rare from requests, while an engine that
# cannot run reaches it within three requests. Then `StepFailures.self_check` decides: dead only if it fails too.
MAX_FAILED_STEPS = 3


class EngineFailing(RuntimeError):
    """Steps kept failing and the engine's self-check failed too: it cannot run (the loop ends as if it died)."""


class StepFailures:
    """What LLMEngine does with a step that raised, and AsyncEngine with steps that keep failing."""

    def __init__(self, scheduler: Scheduler, outputs: OutputProcessor, requests: dict[str, Request],
                 runner: ModelRunner) -> None:
        self.scheduler = scheduler
        self.outputs = outputs
        self.requests = requests  # LLMEngine.requests, shared: a request that fails alone leaves it
        self.runner = runner
        # Steps failed in a row, not counting a suspect's retry alone (its failure is its own): AsyncEngine
        # declares the engine dead past a few, if `self_check` fails too.
        self.num_failed_steps = 0

    def ran(self) -> None:
        """A step ran: the steps failed in a row start again from none."""
        self.num_failed_steps = 0

    def contain(self, batch: ScheduledBatch, exc: Exception, *, retrying: bool) -> None:
        """A synchronous step failed (`retrying`: it was a suspect's retry alone): a batch's requests are
        retried alone; a request that failed alone is removed and raised as RequestFailed (a background prefill,
        which no client waits on, is dropped)."""
        self.num_failed_steps += not retrying
        self.scheduler.block_manager.uncache(batch.cached_blocks)
        if len(batch.requests) > 1 or batch.requests[0].prefill_only:  # a background prefill is dropped there
            self._retry_alone(batch.requests, exc)
            return
        request = batch.requests[0]
        logger.error("request %s failed the engine step alone", request.request_id, exc_info=exc)
        self.scheduler.finish(request)
        self.requests.pop(request.request_id, None)
        self.outputs.remove(request.request_id)
        raise RequestFailed(request.request_id, f"{type(exc).__name__}: {exc}") from exc

    def abandon(self, batches: list[ScheduledBatch], exc: Exception) -> None:
        """An async step failed: what is in flight is dropped (its ids were never read), and the requests are
        recomputed from the tokens the host has, each alone and synchronously, so the failure lands on one."""
        self.num_failed_steps += 1
        for batch in batches:
            self.scheduler.block_manager.uncache(batch.cached_blocks)
        self._retry_alone(list(dict.fromkeys(r for batch in batches for r in batch.requests)), exc)

    def _retry_alone(self, requests: list[Request], exc: Exception) -> None:
        logger.warning("a step over %d requests failed (%s: %s); %s", len(requests), type(exc).__name__, exc,
                       _what_happens(requests))
        for request in requests:
            request.num_placeholders = 0  # ids sampled but never read go with the failed step
        self.scheduler.quarantine(requests)

    def check(self) -> None:
        """Past MAX_FAILED_STEPS steps failed in a row (not while a failed batch's requests are retried alone:
        each is answered on its own), raise EngineFailing if the engine cannot run a token either; else the
        failures were the requests' own, and the count starts again."""
        if self.num_failed_steps < MAX_FAILED_STEPS or self.scheduler.suspects:
            return
        num_failed = self.num_failed_steps
        failure = self.self_check()
        if failure is not None:
            raise EngineFailing(f"{num_failed} steps failed in a row and a self-check failed too ({failure})")
        logger.warning("%d engine steps failed in a row but the engine runs a self-check: blaming their requests",
                       num_failed)
        self.num_failed_steps = 0

    def self_check(self) -> str | None:
        """One token through the model (no KV written) and read back: None when it runs, else why not. Tells an
        engine that cannot run at all (a lost device, a sticky CUDA error) from steps that failed for their
        requests."""
        try:
            with device_scope(self.runner.device):  # called outside LLMEngine.step (AsyncEngine's loop)
                self.runner.dry_forward(1).sum().item()
        except Exception as exc:  # noqa: BLE001 (the answer is the failure)
            return f"{type(exc).__name__}: {exc}"
        return None


def _what_happens(requests: list[Request]) -> str:
    """The log's account of Scheduler.quarantine: clients' requests retried alone, background prefills dropped."""
    num_prefills = sum(r.prefill_only and not r.finished for r in requests)
    num_retried = sum(not r.prefill_only for r in requests)
    if not num_prefills:
        return "retrying each alone"
    dropped = f"dropping {num_prefills} background prefill{'s' if num_prefills > 1 else ''} (no client waits on one)"
    return f"retrying the other {num_retried} each alone, {dropped}" if num_retried else dropped
