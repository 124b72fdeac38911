"""SamplingParams: how one request is sampled and when it stops (vLLM-shaped)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from velollm.errors import InvalidRequest

# Beyond these, sampling is uniform noise or one token forever: a client mistake, refused as one.
MAX_TEMPERATURE = 100.0
MAX_REPETITION_PENALTY = 100.0
MAX_LOGPROBS = 20  # top alternatives per token, as vLLM's default max_logprobs

SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1  # 64 bits, signed or not (api/generation.py wraps the unsigned ones)


@dataclass(frozen=True)
class ReasoningSpan:
    """A reasoning model's thinking before a constrained answer: free text from `begin` to `end`.

    begin "": the prompt already opened it (the answer starts inside). optional: the model may
    skip it and answer at once. The thinking gets part of max_tokens, then `end` is forced, so
    the constrained answer always has room to finish.
    """

    begin: str
    end: str
    optional: bool = False


@dataclass(frozen=True)
class StructuredOutput:
    """A constraint on the generated text, compiled to a token mask by the grammar backend.

    kind: "json_object" (any JSON object), "json_schema" (value: the schema as a JSON string),
    "ebnf" (value: a grammar), "regex" (value: a pattern the whole answer matches), "structural_tag" (value:
    xgrammar structural-tag JSON; used for tool_choice="auto": free text until a trigger, then constrained).
    reasoning: the constraint starts after the model's thinking.
    """

    kind: Literal["json_object", "json_schema", "ebnf", "regex", "structural_tag"]
    value: str = ""
    reasoning: ReasoningSpan | None = None


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1 or 0: off
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    repetition_window: int = -1  # last N tokens the repetition penalty looks at (Ollama repeat_last_n); -1: all
    seed: int | None = None
    max_tokens: int | None = 16
    min_tokens: int = 0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    logprobs: int | None = None  # top-k logprobs per generated token (the sampled token always included)
    prompt_logprobs: int | None = None  # top-k logprobs per prompt token (the prompt token always included)
    logit_bias: dict[int, float] = field(default_factory=dict)
    allowed_token_ids: list[int] | None = None  # vLLM's: only these ids may be sampled
    skip_special_tokens: bool = True
    # vLLM's cache_salt (not sampling: the one per-request engine setting beside it): prefix-cache blocks are
    # shared only between requests of the same salt, so a tenant cannot time another's cached prompts.
    cache_salt: str | None = None
    structured_output: StructuredOutput | None = None
    # "delta": each step's delta carries its new text (streaming). "final_only": the text comes whole
    # with the finishing delta (token ids still arrive per step): no incremental detokenization, which
    # costs the engine loop a few microseconds per token (LLM.generate, non-streamed API requests).
    # Stop strings need the text as it grows, so they keep "delta" behaviour.
    output_kind: Literal["delta", "final_only"] = "delta"

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = [s for s in (self.stop or []) if s]
        self.stop_token_ids = list(self.stop_token_ids or [])
        self.logit_bias = {int(k): float(v) for k, v in (self.logit_bias or {}).items()}
        if self.allowed_token_ids is not None:
            self.allowed_token_ids = list(self.allowed_token_ids)
        self._validate()

    def _validate(self) -> None:
        def bad(param: str, why: str) -> None:
            raise InvalidRequest(f"{param} {why}", param=param)

        for name in ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty"):
            if not math.isfinite(getattr(self, name)):
                bad(name, f"must be a finite number, got {getattr(self, name)}")
        if self.n < 1:
            bad("n", f"must be at least 1, got {self.n}")
        if not 0 <= self.temperature <= MAX_TEMPERATURE:
            bad("temperature", f"must be in [0, {MAX_TEMPERATURE}], got {self.temperature}")
        if not 0 < self.top_p <= 1:
            bad("top_p", f"must be in (0, 1], got {self.top_p}")
        if self.top_k < -1:
            bad("top_k", f"must be -1 (disabled) or positive, got {self.top_k}")
        if not 0 <= self.min_p <= 1:
            bad("min_p", f"must be in [0, 1], got {self.min_p}")
        if not -2 <= self.presence_penalty <= 2:
            bad("presence_penalty", f"must be in [-2, 2], got {self.presence_penalty}")
        if not -2 <= self.frequency_penalty <= 2:
            bad("frequency_penalty", f"must be in [-2, 2], got {self.frequency_penalty}")
        if not 0 < self.repetition_penalty <= MAX_REPETITION_PENALTY:
            bad("repetition_penalty", f"must be in (0, {MAX_REPETITION_PENALTY}], got {self.repetition_penalty}")
        if self.seed is not None and not SEED_MIN <= self.seed <= SEED_MAX:
            bad("seed", f"must fit in 64 bits, got {self.seed}")
        for token_id in self.stop_token_ids:
            if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
                bad("stop_token_ids", f"must be non-negative token ids, got {token_id!r}")
        if self.allowed_token_ids is not None:
            if not self.allowed_token_ids:
                bad("allowed_token_ids", "must not be empty: it would leave no token to sample")
            for token_id in self.allowed_token_ids:
                if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
                    bad("allowed_token_ids", f"must be non-negative token ids, got {token_id!r}")
        if self.cache_salt is not None and (not isinstance(self.cache_salt, str) or not self.cache_salt):
            bad("cache_salt", f"must be a non-empty string, got {self.cache_salt!r:.40}")
        if self.max_tokens is not None and self.max_tokens < 1:
            bad("max_tokens", f"must be at least 1, got {self.max_tokens}")
        if self.min_tokens < 0:
            bad("min_tokens", f"must be non-negative, got {self.min_tokens}")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            bad("min_tokens", f"({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})")
        if self.output_kind not in ("delta", "final_only"):
            bad("output_kind", f"must be 'delta' or 'final_only', got {self.output_kind!r}")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_LOGPROBS:
                bad(name, f"must be in [0, {MAX_LOGPROBS}], got {value}")
        for token_id, bias in self.logit_bias.items():
            if token_id < 0:
                bad("logit_bias", f"keys must be non-negative token ids, got {token_id}")
            if not -100 <= bias <= 100:  # NaN fails this too
                bad("logit_bias", f"values must be in [-100, 100], got {bias} for token {token_id}")

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-5 or self.top_k == 1
