"""Penalty state kept across steps against the recount the sampler did at every step: bitwise equal logits."""

from __future__ import annotations

import random

import pytest
import torch

from tests.greedy_agreement import assert_all_greedy_agree
from velollm.engine.penalties import PenaltyState, TokenCounts
from velollm.engine.request import Request
from velollm.engine.sampler import Sampler
from velollm.sampling_params import SamplingParams

from .helpers import greedy, make_engine, random_prompts, run_all

V = 40


def recount(row_logits: torch.Tensor, request: Request) -> None:
    """The sampler's penalties before PenaltyState (its apply_penalties): everything rebuilt from the
    request's tokens."""
    params = request.params
    vocab = row_logits.shape[0]
    if params.repetition_penalty != 1.0:
        seen = request.all_token_ids
        if params.repetition_window > 0:
            seen = seen[-params.repetition_window :]
        ids = torch.tensor(sorted({i for i in seen if i < vocab}), dtype=torch.long)
        if ids.numel():
            values = row_logits[ids]
            row_logits[ids] = torch.where(values > 0, values / params.repetition_penalty,
                                          values * params.repetition_penalty)
    if (params.presence_penalty or params.frequency_penalty) and request.output_token_ids:
        out = torch.tensor([i for i in request.output_token_ids if i < vocab], dtype=torch.long)
        counts = torch.bincount(out, minlength=vocab).to(row_logits.dtype)
        row_logits -= params.frequency_penalty * counts + params.presence_penalty * (counts > 0).to(row_logits.dtype)


def random_params(rng: random.Random) -> SamplingParams:
    return SamplingParams(
        repetition_penalty=rng.choice([1.0, 1.3, 0.8, 2.0]),
        repetition_window=rng.choice([-1, 1, 3, 8, 1000]),
        presence_penalty=rng.choice([0.0, 0.5, -1.25]),
        frequency_penalty=rng.choice([0.0, 0.3, -0.7]),
    )


def random_logits(rows: int, gen: torch.Generator) -> torch.Tensor:
    logits = torch.randn(rows, V, generator=gen) * 3
    logits[:, ::7] = 0.0  # exact zeros: the penalty's sign test
    return logits


def assert_steps_equal(requests: list[Request], appended: list[list[list[int]]], seed: int) -> None:
    """Each step: `appended[step][row]` is added to the row's output, then the sampler's logits are compared
    with the recount's on fresh logits."""
    gen = torch.Generator().manual_seed(seed)
    sampler = Sampler(V, frozenset())
    for step, per_row in enumerate(appended):
        for request, token_ids in zip(requests, per_row):
            request.output_token_ids.extend(token_ids)
        logits = random_logits(len(requests), gen)
        expected = logits.clone()
        for row, request in enumerate(requests):
            recount(expected[row], request)
        got = sampler.process(logits, requests)
        assert torch.equal(got, expected), f"step {step}: {(got != expected).nonzero().tolist()}"


def test_decode_steps_equal_the_recount():
    """Many rows, random params (windows shorter and longer than the sequence), one token a step, ids past the
    logits' vocabulary in prompt and output (a direct sampler call; the engine refuses them)."""
    rng = random.Random(0)
    for trial in range(6):
        rows = 7
        requests = [Request(str(i), [rng.randrange(V + 3) for _ in range(rng.randrange(0, 30))], random_params(rng))
                    for i in range(rows)]
        steps = [[[rng.randrange(V + 2)] for _ in range(rows)] for _ in range(40)]
        assert_steps_equal(requests, steps, seed=trial)


def test_several_tokens_between_steps_equal_the_recount():
    """A row skipped for steps (preempted and recomputed, or waiting in the batch) comes back with several new
    tokens, or none: the state counts them all at its next step."""
    rng = random.Random(1)
    for trial in range(6):
        requests = [Request(str(i), [rng.randrange(V) for _ in range(rng.randrange(1, 20))], random_params(rng))
                    for i in range(5)]
        steps = [[[rng.randrange(V) for _ in range(rng.choice([0, 0, 1, 2, 5, 12]))] for _ in requests]
                 for _ in range(25)]
        assert_steps_equal(requests, steps, seed=100 + trial)


def test_state_is_rebuilt_for_another_request_or_vocabulary():
    """A request object made again from a sequence's tokens starts its own state; a state whose request has
    fewer tokens than it counted, or another vocabulary, is counted again."""
    params = SamplingParams(repetition_penalty=1.5, repetition_window=4, frequency_penalty=0.5)
    request = Request("a", [1, 2, 3, 4, 5], params, output_token_ids=[6, 6])
    Sampler(V, frozenset()).process(torch.randn(1, V), [request])
    request.output_token_ids[:] = [7]  # not something the engine does: the state must notice, not go stale
    assert_steps_equal([request], [[[]], [[8]]], seed=3)
    logits = torch.randn(1, V - 10)
    expected = logits.clone()
    recount(expected[0], request)
    assert torch.equal(Sampler(V - 10, frozenset()).process(logits, [request]), expected)


@pytest.mark.parametrize("keep_values", [True, False])
def test_token_counts_device_copy_matches_the_host(keep_values):
    """Random adds and removals (swap-remove keeps `ids[:num_ids]` the live ids), from a first count of many."""
    rng = random.Random(2)
    counts = TokenCounts(V, torch.device("cpu"), keep_values)
    truth: dict[int, int] = {}
    first = [rng.randrange(-2, V + 2) for _ in range(100)]
    counts.add(first, 1)
    for token_id in first:
        if 0 <= token_id < V:
            truth[token_id] = truth.get(token_id, 0) + 1
    for _ in range(300):
        if truth and rng.random() < 0.45:
            token_id = rng.choice(list(truth))
            counts.add([token_id], -1)
            truth[token_id] -= 1
            if not truth[token_id]:
                del truth[token_id]
        else:
            added = [rng.randrange(V) for _ in range(rng.choice([1, 1, 3, 50]))]
            counts.add(added, 1)
            for token_id in added:
                truth[token_id] = truth.get(token_id, 0) + 1
        if rng.random() < 0.5:
            ids, values = counts.sync()
            assert sorted(ids.tolist()) == sorted(truth) and counts.counts == truth
            if keep_values:
                assert dict(zip(ids.tolist(), values.tolist())) == truth


def test_state_counts_each_token_once():
    """The prompt is counted at the first step, then only what is appended."""
    params = SamplingParams(repetition_penalty=1.2, presence_penalty=0.5)
    request = Request("a", list(range(30)), params)
    state = PenaltyState.of(request, V, torch.device("cpu"))
    assert (state.num_tokens, state.num_output) == (30, 0)
    request.output_token_ids += [3, 3]
    assert PenaltyState.of(request, V, torch.device("cpu")) is state
    assert (state.num_tokens, state.num_output) == (32, 2)
    assert state.seen.counts[3] == 3 and state.output.counts == {3: 2}


def test_preempted_requests_with_penalties_equal_the_unpreempted(llama_folder):
    """Preemption recomputes a request's KV cache and keeps its tokens: its penalty state stays right."""
    prompts = random_prompts([30, 41, 25, 36, 50, 19, 44, 28], seed=13)
    params = greedy(30, logprobs=2, repetition_penalty=1.3, presence_penalty=0.4, frequency_penalty=0.2)
    windowed = greedy(30, logprobs=2, repetition_penalty=1.5, repetition_window=8)
    per_prompt = [params if i % 2 else windowed for i in range(len(prompts))]
    reference = run_all(make_engine(llama_folder), prompts, per_prompt)
    block_bytes = make_engine(llama_folder).runner.kv_bytes_per_block()
    tight = make_engine(llama_folder, kv_cache_memory=14 * block_bytes)
    constrained = run_all(tight, prompts, per_prompt)
    assert tight.stats().num_preemptions > 0
    assert_all_greedy_agree(constrained, reference, what="unpreempted")
