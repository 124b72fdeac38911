"""Sampler processors and filters against direct torch computations on fixed logits."""

from __future__ import annotations

import torch

from velollm.engine.request import Request
from velollm.engine.sampler import Sampler, apply_top_k_top_p_min_p
from velollm.sampling_params import SamplingParams

V = 12


def req(params: SamplingParams, prompt=(1, 2, 3), output=(), seed=None) -> Request:
    r = Request("r", list(prompt), params, output_token_ids=list(output))
    if seed is not None:
        r.generator = torch.Generator().manual_seed(seed)
    return r


def fixed_logits(rows: int = 1) -> torch.Tensor:
    return torch.linspace(-3, 3, V).repeat(rows, 1) + torch.arange(rows).unsqueeze(1) * 0.1


def test_greedy_is_argmax():
    logits = torch.randn(4, V)
    ids, _ = Sampler(V, frozenset())(logits.clone(), [req(SamplingParams(temperature=0))] * 4)
    assert ids == logits.argmax(-1).tolist()


def test_logit_bias_applies_before_choice():
    logits = fixed_logits()
    ids, _ = Sampler(V, frozenset())(logits, [req(SamplingParams(temperature=0, logit_bias={0: 100}))])
    assert ids == [0]


def test_allowed_token_ids_leave_only_those_ids():
    """vLLM's allowed_token_ids: the rest masked out, greedy and sampled alike; the other rows untouched."""
    logits = fixed_logits(2)  # the greedy choice is the last id
    allowed = SamplingParams(temperature=0, allowed_token_ids=[2, 4])
    ids, _ = Sampler(V, frozenset())(logits.clone(), [req(allowed), req(SamplingParams(temperature=0))])
    assert ids == [4, V - 1]
    sampled = [req(SamplingParams(temperature=5.0, allowed_token_ids=[0, 7]), seed=s) for s in range(20)]
    ids, _ = Sampler(V, frozenset())(fixed_logits(20), sampled)
    assert set(ids) == {0, 7}
    # min_tokens bans EOS and stop ids; allowed ids that are all banned stay (a masked-out id 0 came out)
    only_eos = SamplingParams(temperature=0, min_tokens=2, allowed_token_ids=[3, 5], stop_token_ids=[5])
    ids, _ = Sampler(V, frozenset({3}))(fixed_logits(), [req(only_eos)])
    assert ids == [5]
    some_left = SamplingParams(temperature=0, min_tokens=2, allowed_token_ids=[1, 3, 5], stop_token_ids=[5])
    ids, _ = Sampler(V, frozenset({3}))(fixed_logits(), [req(some_left)])
    assert ids == [1]


def test_min_tokens_bans_eos_and_stop_ids():
    logits = torch.zeros(1, V)
    logits[0, 5] = 10
    logits[0, 6] = 9
    params = SamplingParams(temperature=0, min_tokens=2, stop_token_ids=[6])
    ids, _ = Sampler(V, frozenset({5}))(logits.clone(), [req(params)])
    assert ids not in ([5], [6])
    ids, _ = Sampler(V, frozenset({5}))(logits.clone(), [req(params, output=(1, 1))])
    assert ids == [5]


def test_penalties_match_direct_computation():
    params = SamplingParams(temperature=0, repetition_penalty=1.3, presence_penalty=0.5, frequency_penalty=0.25)
    r = req(params, prompt=(1, 2), output=(2, 7, 7, 11))
    logits = fixed_logits()
    expected = logits.clone()[0]
    for t in {1, 2, 7, 11}:
        expected[t] = expected[t] / 1.3 if expected[t] > 0 else expected[t] * 1.3
    for t, count in {2: 1, 7: 2, 11: 1}.items():
        expected[t] -= 0.25 * count + 0.5
    processed = Sampler(V, frozenset()).process(logits.clone(), [r])
    torch.testing.assert_close(processed[0], expected)


def test_repetition_window_limits_the_penalty():
    params = SamplingParams(temperature=0, repetition_penalty=2.0, repetition_window=2)
    r = req(params, prompt=(1, 2, 3), output=(4,))
    logits = fixed_logits()
    processed = Sampler(V, frozenset()).process(logits.clone(), [r])[0]
    changed = (processed != logits[0]).nonzero().flatten().tolist()
    assert changed == [3, 4]


def test_top_k_top_p_min_p_filters():
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.15, 0.1, 0.05]]))
    def kept(top_k, top_p, min_p):
        out = apply_top_k_top_p_min_p(logits.clone(), torch.tensor([top_k]), torch.tensor([top_p]), torch.tensor([min_p]))
        return torch.isfinite(out[0]).nonzero().flatten().tolist()
    assert kept(2, 1.0, 0.0) == [0, 1]
    assert kept(5, 0.69, 0.0) == [0, 1]  # 0.4 + 0.3 covers 0.69: the rest is cut
    assert kept(5, 0.71, 0.0) == [0, 1, 2]
    assert kept(5, 1.0, 0.3) == [0, 1, 2]  # keep p >= 0.3 * 0.4
    assert kept(5, 0.1, 0.0) == [0]  # the best token always survives
    # min-p first (keeps 0.4, 0.3), then top-p on the renormalised 0.57 / 0.43
    assert kept(3, 0.6, 0.5) == [0, 1]
    assert kept(3, 0.5, 0.5) == [0]


def test_sampling_distribution_follows_filtered_softmax():
    params = SamplingParams(temperature=0.7, top_k=3, seed=0)
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.5, 0.0] + [-5.0] * (V - 5)])
    r = req(params, seed=0)
    sampler = Sampler(V, frozenset())
    counts = torch.zeros(V)
    for _ in range(3000):
        ids, _ = sampler(logits.clone(), [r])
        counts[ids[0]] += 1
    expected = torch.softmax(logits[0, :3] / 0.7, -1)
    assert counts[3:].sum() == 0
    assert torch.allclose(counts[:3] / 3000, expected, atol=0.03)


def test_per_request_seed_reproduces_regardless_of_batch():
    params = SamplingParams(temperature=1.0, seed=42)
    sampler = Sampler(V, frozenset())
    logits = torch.randn(1, V)
    alone = [sampler(logits.clone(), [req(params, seed=42)])[0][0]]
    r = req(params, seed=42)
    alone = []
    for _ in range(20):
        alone.append(sampler(logits.clone(), [r])[0][0])
    r2 = req(params, seed=42)
    other = req(SamplingParams(temperature=1.0))
    batched = []
    for _ in range(20):
        batched.append(sampler(torch.cat([torch.randn(1, V), logits]), [other, r2])[0][1])
    assert alone == batched
    assert len(set(alone)) > 1


def test_logprobs_include_top_k_and_sampled_token():
    logits = fixed_logits()
    logits[0, 0] = 10.0
    params = SamplingParams(temperature=0, logprobs=2, logit_bias={})
    ids, logprobs = Sampler(V, frozenset())(logits.clone(), [req(params)])
    expected = torch.log_softmax(logits[0], -1)
    assert set(logprobs[0]) == {0, V - 1}
    assert abs(logprobs[0][0] - expected[0].item()) < 1e-6
    params = SamplingParams(temperature=50.0, logprobs=0, seed=1)
    ids, logprobs = Sampler(V, frozenset())(torch.zeros(1, V), [req(params, seed=1)])
    assert list(logprobs[0]) == ids


def test_processor_tensors_are_built_once_per_request(monkeypatch):
    """allowed_token_ids, logit_bias and min_tokens' banned ids go to the device at the request's first step
    only (they were rebuilt every step: milliseconds a row); later steps give the same answers."""
    import velollm.engine.sampler as sampler_module

    built = []
    real = sampler_module._on_device
    monkeypatch.setattr(sampler_module, "_on_device", lambda data, *a: built.append(len(data)) or real(data, *a))
    params = SamplingParams(temperature=0, allowed_token_ids=[2, 4, 5, 9], logit_bias={2: 100.0},
                            min_tokens=2, stop_token_ids=[5])
    r = req(params)
    sampler = Sampler(V, frozenset({4}))
    steps = []
    for _ in range(4):
        ids, _ = sampler(fixed_logits(), [r])
        steps.append(ids[0])
        r.output_token_ids.append(ids[0])
    assert built == [4, 1, 1, 2]  # allowed, bias ids, bias values, banned: once
    assert steps == [2, 2, 2, 2]
    banned_then_not = SamplingParams(temperature=0, allowed_token_ids=[2, 5], min_tokens=1, stop_token_ids=[5])
    r = req(banned_then_not)
    assert sampler(fixed_logits(), [r])[0] == [2]
    r.output_token_ids.append(2)
    assert sampler(fixed_logits(), [r])[0] == [5]  # min_tokens reached: the cached ban no longer applies
