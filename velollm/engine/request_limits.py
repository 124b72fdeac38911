"""`RequestLimits`: what the model's sizes decide about a request (SamplingParams checked the rest when built)."""

from __future__ import annotations

from dataclasses import dataclass

from velollm.errors import ContextOverflow, InvalidRequest
from velollm.output_budget import fit_max_tokens
from velollm.sampling_params import SamplingParams


@dataclass(frozen=True)
class RequestLimits:
    vocab_size: int
    max_model_len: int  # the context a request's prompt and output share

    def validate(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Raise InvalidRequest or ContextOverflow for a request this model cannot run."""
        self.validate_prompt(prompt_token_ids)
        vocab = self.vocab_size
        for param, token_ids in (("stop_token_ids", params.stop_token_ids), ("logit_bias", params.logit_bias),
                                 ("allowed_token_ids", params.allowed_token_ids or [])):
            bad = next((t for t in token_ids if not 0 <= t < vocab), None)
            if bad is not None:
                raise InvalidRequest(f"{param}: token id {bad} is outside the vocabulary (0..{vocab - 1})",
                                     param=param)

    def validate_prompt(self, prompt_token_ids: list[int]) -> None:
        if not prompt_token_ids:
            raise InvalidRequest("the prompt is empty", param="prompt")
        if len(prompt_token_ids) >= self.max_model_len:
            raise ContextOverflow(f"the prompt has {len(prompt_token_ids)} tokens; the context holds "
                                  f"{self.max_model_len} including at least one generated token", param="prompt")
        vocab = self.vocab_size
        bad = next((t for t in prompt_token_ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise InvalidRequest(f"token id {bad} is outside the vocabulary (0..{vocab - 1})", param="prompt")

    def output_budget(self, num_prompt_tokens: int, params: SamplingParams) -> int:
        """The most tokens a request may generate (what a grammar winds down against)."""
        return fit_max_tokens(num_prompt_tokens, params.max_tokens, self.max_model_len)
