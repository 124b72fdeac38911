"""Greedy generation equals transformers; batching, prefix caching, preemption and abort keep outputs exact."""

from __future__ import annotations

import pytest
import torch
import transformers

from tests.greedy_agreement import assert_all_greedy_agree, assert_greedy_agrees, top_logprobs

from .conftest import ARCHS
from .helpers import greedy, make_engine, random_prompts, run_all


@pytest.mark.parametrize("async_scheduling", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_greedy_equals_transformers_generate(tiny_models, arch, async_scheduling):
    folder = tiny_models[arch]
    prompt = random_prompts([21], seed=7)[0]
    [out] = run_all(make_engine(folder, async_scheduling=async_scheduling), [prompt], greedy(32, logprobs=2))
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ref = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=32, min_new_tokens=32,
                         output_logits=True, return_dict_in_generate=True)
    ref_ids = ref.sequences[0, len(prompt):].tolist()
    ref_logprobs = top_logprobs(ref.logits)
    assert out.finish_reason == "length" and len(out.logprobs) == len(ref_logprobs) == 32
    # equal up to a near tie (tests/greedy_agreement.py): these models meet top-two gaps of 0.003 nats
    assert_greedy_agrees(out.token_ids, out.logprobs, ref_ids, ref_logprobs, what="transformers")


def test_batch_invariance(llama_folder):
    prompts = random_prompts([3, 9, 15, 16, 17, 24, 31, 32, 33, 40, 47, 5, 64, 70, 12, 1], seed=11)
    together = run_all(make_engine(llama_folder), prompts, greedy(24, logprobs=2))
    alone = [run_all(make_engine(llama_folder), [p], greedy(24, logprobs=2))[0] for p in prompts]
    assert_all_greedy_agree(together, alone, what="alone")  # these prompts meet a 0.0009-nat tie


def test_prefix_cache_computes_only_new_tokens(llama_folder):
    engine = make_engine(llama_folder)
    prefix = random_prompts([100], seed=5)[0]
    first = prefix + [7, 8, 9]
    second = prefix + [10, 11, 12, 13]
    run_all(engine, [first], greedy(8))
    before = engine.runner.num_forward_tokens
    [out_second] = run_all(engine, [second], greedy(8, logprobs=2))
    computed = engine.runner.num_forward_tokens - before
    cached = 96  # six full blocks of the shared 100-token prefix
    assert out_second.num_cached_tokens == cached
    # the prompt's uncached tail, plus one forward token per generated token after the first
    assert computed == len(second) - cached + 7
    [fresh] = run_all(make_engine(llama_folder), [second], greedy(8, logprobs=2))
    assert_all_greedy_agree([out_second], [fresh], what="uncached")
    assert all(block.ref_count == 0 for block in engine.block_manager.blocks)
    assert engine.block_manager.num_allocated_blocks == 0
    stats = engine.stats()
    assert stats.prefix_cache_hits == cached and stats.prefix_cache_queries == len(first) + len(second)


def test_prefix_cache_never_serves_the_final_prompt_token(llama_folder):
    engine = make_engine(llama_folder)
    prompt = random_prompts([32], seed=6)[0]  # exactly two blocks
    run_all(engine, [prompt], greedy(2))
    [again] = run_all(engine, [prompt], greedy(2))
    assert again.num_cached_tokens == 16


def test_preemption_recomputes_to_identical_output(llama_folder):
    prompts = random_prompts([30, 41, 25, 36, 50, 19, 44, 28], seed=13)
    reference = run_all(make_engine(llama_folder), prompts, greedy(40, logprobs=2))
    block_bytes = make_engine(llama_folder).runner.kv_bytes_per_block()
    tight = make_engine(llama_folder, kv_cache_memory=14 * block_bytes)  # far less than 8 x 5 blocks
    constrained = run_all(tight, prompts, greedy(40, logprobs=2))
    assert tight.stats().num_preemptions > 0
    assert_all_greedy_agree(constrained, reference, what="unpreempted")
    assert tight.block_manager.num_allocated_blocks == 0


def test_abort_frees_every_block(llama_folder):
    engine = make_engine(llama_folder)
    prompts = random_prompts([20 + i % 30 for i in range(100)], seed=17)
    requests = [engine.add_request(p, greedy(64)) for p in prompts]
    for _ in range(3):
        engine.step()
    assert engine.block_manager.num_allocated_blocks > 0
    for request in requests:
        engine.abort_request(request.request_id)
    assert engine.block_manager.num_allocated_blocks == 0
    assert not engine.has_unfinished_requests()
    assert engine.stats().num_aborted == 100


def test_chunked_prefill_under_small_token_budget(llama_folder):
    prompts = random_prompts([70, 90, 33], seed=19)
    reference = run_all(make_engine(llama_folder), prompts, greedy(12, logprobs=2))
    chunked = run_all(make_engine(llama_folder, max_num_batched_tokens=24), prompts, greedy(12, logprobs=2))
    assert_all_greedy_agree(chunked, reference, what="unchunked")


def test_logit_bias_and_penalties_on_engine_logits(llama_folder):
    """The runner's logits are inference tensors; the processors edit them in place."""
    engine = make_engine(llama_folder)
    params = greedy(4, logit_bias={42: 100.0}, repetition_penalty=1.2, presence_penalty=0.5, frequency_penalty=0.5)
    [out] = run_all(engine, random_prompts([9], seed=41), params)
    assert out.token_ids == [42, 42, 42, 42]
