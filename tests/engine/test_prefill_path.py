"""The prefill-attention dispatch: steps without a cached prefix may attend over their own k/v
(kernels.varlen_prefill_attention; torch flash on CUDA), forced here on CPU to prove it end to end."""

from __future__ import annotations

import pytest
import torch

from tests.greedy_agreement import assert_all_greedy_agree
from velollm import kernels
from velollm.engine.scheduler import ScheduledBatch

from .helpers import greedy, make_engine, random_prompts, run_all
from .test_models import hf_last_logits, our_logits_in_chunks


@pytest.fixture
def count_varlen(monkeypatch):
    """Calls of the varlen path per step kind, the real function still running."""
    calls = []
    real = kernels.varlen_prefill_attention

    def spy(q, k, v, cu_seqlens_q, max_query_len, scale):
        calls.append(len(cu_seqlens_q) - 1)
        return real(q, k, v, cu_seqlens_q, max_query_len, scale)

    monkeypatch.setattr(kernels, "varlen_prefill_attention", spy)
    return calls


def test_host_step_flags_steps_without_cached_prefix(llama_folder):
    engine = make_engine(llama_folder)
    first, second = (engine.add_request(p, greedy()) for p in random_prompts([20, 5]))
    for request in (first, second):
        engine.scheduler.waiting.remove(request)
        assert engine.block_manager.allocate(request, 20)
    assert engine.runner.host_step(ScheduledBatch([first, second], [20, 5])).no_cached_prefix
    first.num_computed_tokens = 16  # a prefix-cache hit, or the next chunk of a chunked prefill
    assert not engine.runner.host_step(ScheduledBatch([first, second], [4, 5])).no_cached_prefix


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_forced_varlen_matches_transformers(tiny_models, arch, monkeypatch, count_varlen):
    monkeypatch.setenv(kernels.PREFILL_PATH_ENV, "varlen")
    folder = tiny_models[arch]
    prompt = random_prompts([37], seed=5)[0]
    chunks = our_logits_in_chunks(make_engine(folder), prompt, chunk=20)  # a fresh chunk, then one on a prefix
    assert count_varlen == [1] * 2  # the first step only, once per layer (2 layers)
    ref = hf_last_logits(folder, prompt)
    assert (chunks[0] - ref[:20]).abs().max().item() < 1e-4  # every position of the fresh chunk
    assert (chunks[1] - ref[20:]).abs().max().item() < 1e-4


@pytest.mark.parametrize("async_scheduling", [False, True])
def test_forced_varlen_generates_what_paged_does(llama_folder, monkeypatch, count_varlen, async_scheduling):
    # Several fresh prompts of odd lengths in one step (packed cu_seqlens), then decode from the paged cache
    # the varlen steps wrote.
    prompts = random_prompts([3, 17, 30, 1], seed=9)
    engine = lambda: make_engine(llama_folder, enable_prefix_caching=False, async_scheduling=async_scheduling)
    monkeypatch.setenv(kernels.PREFILL_PATH_ENV, "paged")
    paged = run_all(engine(), prompts, greedy(12, logprobs=2))
    assert count_varlen == []
    monkeypatch.setenv(kernels.PREFILL_PATH_ENV, "varlen")
    varlen = run_all(engine(), prompts, greedy(12, logprobs=2))
    assert count_varlen and max(count_varlen) > 1
    assert_all_greedy_agree(varlen, paged, what="paged")  # float32 in another summation order
