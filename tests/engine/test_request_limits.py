"""RequestLimits: what a model's vocabulary and context decide about a request, without a model."""

from __future__ import annotations

import pytest

from velollm.engine.request_limits import RequestLimits
from velollm.errors import ContextOverflow, InvalidRequest
from velollm.sampling_params import SamplingParams

LIMITS = RequestLimits(vocab_size=100, max_model_len=8)


def test_a_request_that_fits_passes():
    LIMITS.validate([0, 99, 5], SamplingParams(stop_token_ids=[99], logit_bias={0: 1.0}))
    LIMITS.validate(list(range(7)), SamplingParams())  # one token of room left for the output


@pytest.mark.parametrize(("prompt", "error", "param", "match"), [
    ([], InvalidRequest, "prompt", "empty"),
    (list(range(8)), ContextOverflow, "prompt", "8 tokens; the context holds 8"),
    ([1, 100], InvalidRequest, "prompt", r"token id 100 is outside the vocabulary \(0..99\)"),
])
def test_prompt_errors_name_the_prompt(prompt, error, param, match):
    with pytest.raises(error, match=match) as info:
        LIMITS.validate(prompt, SamplingParams())
    assert info.value.param == param


@pytest.mark.parametrize("param", ["stop_token_ids", "logit_bias"])
def test_token_ids_in_params_must_be_in_the_vocabulary(param):
    params = SamplingParams(**{param: [100] if param == "stop_token_ids" else {100: 1.0}})
    with pytest.raises(InvalidRequest, match=f"{param}: token id 100 is outside") as info:
        LIMITS.validate([1], params)
    assert info.value.param == param


def test_output_budget_is_what_the_context_leaves():
    assert LIMITS.output_budget(3, SamplingParams(max_tokens=None)) == 5
    assert LIMITS.output_budget(3, SamplingParams(max_tokens=2)) == 2
    with pytest.raises(ContextOverflow):
        LIMITS.output_budget(8, SamplingParams())
