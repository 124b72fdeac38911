"""What the engine returns: per-step deltas for streaming, and whole RequestOutputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length", "abort"]


@dataclass
class PromptLogprobs:
    """The prompt's own logprobs, position by position (vLLM's prompt_logprobs; what echo + logprobs shows).

    Entry i scores prompt token i (`token_ids[i]`) given tokens < i, so entry 0 is None: the first token has no
    context. `logprobs[i]` maps token id -> logprob for the top k ids (best first), then the prompt token;
    `ranks[i]` is the prompt token's rank among the whole vocabulary (1: the likeliest).
    """

    token_ids: list[int]
    logprobs: list[dict[int, float] | None] = field(default_factory=lambda: [None])
    ranks: list[int | None] = field(default_factory=lambda: [None])

    def __len__(self) -> int:
        return len(self.logprobs)

    def extend(self, logprobs: list[dict[int, float]], ranks: list[int]) -> None:
        self.logprobs.extend(logprobs)
        self.ranks.extend(ranks)


@dataclass
class RequestDelta:
    """New output of one request since its last delta (what AsyncEngine streams).

    `text` is already cut at stop strings and holds back incomplete UTF-8; `logprobs[i]` maps
    token id -> logprob for `token_ids[i]` (top-k plus the sampled token) when requested.
    """

    request_id: str
    text: str
    token_ids: list[int]
    logprobs: list[dict[int, float]] | None = None
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None  # the stop string or stop token id that ended it
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    num_output_tokens: int = 0  # cumulative
    # The thinking part of the output when the serving layer splits it off `text` (the engine never does).
    reasoning: str = ""
    prompt_logprobs: PromptLogprobs | None = None  # whole, on a request's first delta, when asked for

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    """The whole result of one request (what LLM.generate returns)."""

    request_id: str
    prompt_token_ids: list[int]
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, float]] | None = None
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    num_cached_tokens: int = 0
    prompt_logprobs: PromptLogprobs | None = None

    def add(self, delta: RequestDelta) -> None:
        if delta.prompt_logprobs is not None:
            self.prompt_logprobs = delta.prompt_logprobs
        self.text += delta.text
        self.token_ids.extend(delta.token_ids)
        if delta.logprobs is not None:
            self.logprobs = (self.logprobs or []) + delta.logprobs
        self.finish_reason = delta.finish_reason
        self.stop_reason = delta.stop_reason
        self.num_cached_tokens = delta.num_cached_tokens

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None
