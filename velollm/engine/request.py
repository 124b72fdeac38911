"""Request: one sequence's state inside the engine."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from velollm.outputs import PromptLogprobs
from velollm.sampling_params import SamplingParams

if TYPE_CHECKING:
    import torch


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Request:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival_time: float = field(default_factory=time.monotonic)
    status: RequestStatus = RequestStatus.WAITING
    output_token_ids: list[int] = field(default_factory=list)
    output_logprobs: list[dict[int, float]] = field(default_factory=list)
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)  # chained hashes of this request's full blocks
    num_computed_tokens: int = 0  # tokens whose KV is in the cache
    num_cached_tokens: int = -1  # prefix-cache hit at first scheduling (-1: not scheduled yet)
    num_preemptions: int = 0
    # Tokens sampled on the device whose ids the host has not read yet (async scheduling: at most one when
    # a step is scheduled, two between launching a step and reading the previous one).
    num_placeholders: int = 0
    generator: torch.Generator | None = None
    sampling_tensors: Any = None  # sampler.RequestTensors: its allowed ids, logit_bias, banned ids on the device
    penalty_state: Any = None  # penalties.PenaltyState: its penalized ids and output counts on the device
    grammar: Any = None  # GrammarMatcher from velollm.engine.text.structured_output, when constrained
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    # A background prefill (Scheduler.add_prefill): its full blocks computed into the prefix cache, nothing
    # sampled, run only while no request waits or runs.
    prefill_only: bool = False
    counted: bool = True  # a background prefill counted in the turn-prefill stats (False: a prompt computed
    # while its grammar compiles, AsyncEngine.generate)
    # params.prompt_logprobs set: the prompt's logprobs, gathered position by position as its prefill runs.
    prompt_logprobs: PromptLogprobs | None = None

    def __post_init__(self) -> None:
        if self.params.prompt_logprobs is not None and self.prompt_logprobs is None:
            self.prompt_logprobs = PromptLogprobs(self.prompt_token_ids)

    @property
    def needs_prompt_logits(self) -> bool:
        """Whether prompt positions still lack their logprobs. Such a request takes no hit from the prefix cache:
        a cached position is never run, so its logits would be missing."""
        return self.prompt_logprobs is not None and len(self.prompt_logprobs) < self.num_prompt_tokens

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_tokens_with_placeholders(self) -> int:
        """The tokens the model has to see: prompt, output, and the sampled ids still on the device."""
        return len(self.prompt_token_ids) + len(self.output_token_ids) + self.num_placeholders

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    def token_ids_slice(self, start: int, end: int) -> list[int]:
        """Tokens [start, end) of prompt + output, without building the whole list."""
        num_prompt = len(self.prompt_token_ids)
        if end <= num_prompt:
            return self.prompt_token_ids[start:end]
        if start >= num_prompt:
            return self.output_token_ids[start - num_prompt : end - num_prompt]
        return self.prompt_token_ids[start:] + self.output_token_ids[: end - num_prompt]

    @property
    def finished(self) -> bool:
        return self.status is RequestStatus.FINISHED
