"""Async scheduling's hand-over: a launched step's sampled ids, still on the device, become the next step's
input ids there (placeholders on the host), so scheduling step N+1 never waits for step N's read-back."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from velollm.engine.request import Request
from velollm.engine.sampler import SampledTokens
from velollm.engine.scheduler import ScheduledBatch


@dataclass(frozen=True)
class PendingTokens:
    """Sampled ids on the device; `rows[request]` is the request's index in `token_ids`."""

    token_ids: torch.Tensor  # int64 [num_sampled]
    rows: dict[Request, int]

    def row(self, request: Request) -> int:
        row = self.rows.get(request)
        if row is None:  # an engine invariant: a placeholder comes from the step launched just before
            raise RuntimeError(f"request {request.request_id} has a placeholder the previous step did not sample")
        return row


@dataclass(frozen=True)
class TokenScatter:
    """input_ids[positions] = token_ids[rows], on the device: fills a step's placeholder inputs."""

    token_ids: torch.Tensor
    positions: torch.Tensor  # int64, into the step's flat input_ids
    rows: torch.Tensor  # int64, into token_ids

    def apply(self, input_ids: torch.Tensor) -> None:
        input_ids.index_copy_(0, self.positions, self.token_ids.index_select(0, self.rows))


@dataclass
class LaunchedStep:
    """A step whose model ran and whose ids were sampled on the device; the host has not read them."""

    batch: ScheduledBatch
    requests: list[Request]  # the requests of the sampled rows, in the order of `sampled`
    sampled: SampledTokens | None  # None when no row reached its last token (prefill chunks only)

    def pending(self) -> PendingTokens | None:
        if self.sampled is None:
            return None
        return PendingTokens(self.sampled.token_ids, {r: i for i, r in enumerate(self.requests)})
