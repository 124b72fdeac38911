"""Prompt logprobs (SamplingParams.prompt_logprobs) equal transformers' on the prompt, whatever the prefix cache,
chunked prefill, batching, async scheduling or preemption did; no KV block is left behind."""

from __future__ import annotations

import pytest
import torch
import transformers

from tests.greedy_agreement import assert_all_greedy_agree
from velollm.engine.prompt_logprobs import prompt_slice
from velollm.engine.request import Request
from velollm.errors import InvalidRequest
from velollm.outputs import PromptLogprobs
from velollm.sampling_params import SamplingParams

from .helpers import greedy, make_engine, random_prompts, run_all

_REFERENCES: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}


def reference_logprobs(folder, prompt: list[int]) -> torch.Tensor:
    """transformers' log_softmax over the prompt's logits: row p scores token p + 1."""
    key = (str(folder), tuple(prompt))
    if key not in _REFERENCES:
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        with torch.no_grad():
            logits = model(torch.tensor([prompt])).logits[0].float()
        _REFERENCES[key] = torch.log_softmax(logits, dim=-1)
    return _REFERENCES[key]


def assert_matches(folder, prompt: list[int], got: PromptLogprobs, k: int, tol: float = 1e-3) -> None:
    ref = reference_logprobs(folder, prompt)
    assert len(got.logprobs) == len(got.ranks) == len(prompt)
    assert got.logprobs[0] is None and got.ranks[0] is None  # the first token has no context
    for i in range(1, len(prompt)):
        row, token = ref[i - 1], prompt[i]
        entry = got.logprobs[i]
        assert abs(entry[token] - row[token].item()) < tol, i
        # rank and top k as the reference has them, up to ties within tol: two float32 computations sum in the
        # order of the CPU's kernels, so logprobs closer than that may come out in either order
        above, tied = int((row > row[token] + tol).sum()), int((row > row[token] - tol).sum())
        assert above + 1 <= got.ranks[i] <= tied + 1, i
        top_ids = list(entry)[:k]  # best first, then the prompt token
        values = row[top_ids]
        assert len(set(top_ids)) == k and (values[:-1] >= values[1:] - tol).all(), i
        assert k == 0 or values.min() >= row.topk(k).values[-1] - tol, i  # a top k of the reference's
        assert set(entry) == set(top_ids) | {token}
        for token_id in top_ids:
            assert abs(entry[token_id] - row[token_id].item()) < tol


def logprob_params(k: int = 3, max_tokens: int = 4) -> SamplingParams:
    return greedy(max_tokens, prompt_logprobs=k)


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_prompt_logprobs_equal_transformers(tiny_models, arch):
    folder = tiny_models[arch]
    prompt = random_prompts([37], seed=3)[0]
    engine = make_engine(folder, max_num_seqs=4)  # logits scored 4 rows at a time
    [out] = run_all(engine, [prompt], greedy(4, prompt_logprobs=5, logprobs=2))
    assert_matches(folder, prompt, out.prompt_logprobs, k=5)
    [plain] = run_all(make_engine(folder), [prompt], greedy(4, logprobs=2))
    assert_all_greedy_agree([out], [plain], what="without prompt logprobs")
    assert plain.prompt_logprobs is None
    assert engine.block_manager.num_allocated_blocks == 0


def test_prompt_logprobs_zero_gives_the_prompt_token_only(llama_folder):
    prompt = random_prompts([12], seed=4)[0]
    [out] = run_all(make_engine(llama_folder), [prompt], logprob_params(k=0))
    assert [list(e) for e in out.prompt_logprobs.logprobs[1:]] == [[t] for t in prompt[1:]]
    assert_matches(llama_folder, prompt, out.prompt_logprobs, k=0)


def test_one_token_prompt_has_only_the_first_entry(llama_folder):
    [out] = run_all(make_engine(llama_folder), [[5]], logprob_params())
    assert out.prompt_logprobs.logprobs == [None] and out.prompt_logprobs.ranks == [None]


@pytest.mark.parametrize("async_scheduling", [False, True], ids=["sync", "async"])
def test_chunked_prefill_gathers_every_chunk(llama_folder, async_scheduling):
    """A 16-token budget splits the prompts into chunks, batched with other prompts' chunks and decodes."""
    prompts = random_prompts([61, 23, 45, 30], seed=8)
    params = [greedy(4, prompt_logprobs=3, logprobs=2), greedy(6, logprobs=2), greedy(4, prompt_logprobs=2, logprobs=2),
              greedy(3, logprobs=2)]
    engine = make_engine(llama_folder, max_num_batched_tokens=16, async_scheduling=async_scheduling)
    outs = run_all(engine, prompts, params)
    assert_matches(llama_folder, prompts[0], outs[0].prompt_logprobs, k=3)
    assert_matches(llama_folder, prompts[2], outs[2].prompt_logprobs, k=2)
    assert outs[1].prompt_logprobs is None and outs[3].prompt_logprobs is None
    whole = run_all(make_engine(llama_folder), prompts, params)
    assert_all_greedy_agree(outs, whole, what="unchunked")
    assert engine.block_manager.num_allocated_blocks == 0


def test_one_token_chunks(llama_folder):
    """A budget of one token: every prompt chunk is one row (a decode-shaped step that still scores it)."""
    prompt = random_prompts([9], seed=9)[0]
    [out] = run_all(make_engine(llama_folder, max_num_batched_tokens=1), [prompt], logprob_params(max_tokens=2))
    assert_matches(llama_folder, prompt, out.prompt_logprobs, k=3)


def test_prefix_cache_hits_are_recomputed(llama_folder):
    """A cached prompt is run again for its logprobs (a cached position has no logits), twice alike; its blocks
    still serve requests that want no prompt logprobs."""
    engine = make_engine(llama_folder)
    prompt = random_prompts([50], seed=10)[0]
    run_all(engine, [prompt], greedy(2))
    before = engine.runner.num_forward_tokens
    [first] = run_all(engine, [prompt], logprob_params(max_tokens=1))
    assert engine.runner.num_forward_tokens - before == len(prompt)  # nothing taken from the cache
    assert first.num_cached_tokens == 0
    [second] = run_all(engine, [prompt], logprob_params(max_tokens=1))
    assert second.prompt_logprobs == first.prompt_logprobs
    assert_matches(llama_folder, prompt, second.prompt_logprobs, k=3)
    [plain] = run_all(engine, [prompt], greedy(2))
    assert plain.num_cached_tokens == 48
    assert engine.block_manager.num_allocated_blocks == 0
    assert all(block.ref_count == 0 for block in engine.block_manager.blocks)


def test_preemption_keeps_prompt_logprobs(llama_folder):
    prompts = random_prompts([30, 41, 25, 36, 50, 19], seed=13)
    block_bytes = make_engine(llama_folder).runner.kv_bytes_per_block()
    tight = make_engine(llama_folder, kv_cache_memory=12 * block_bytes, max_num_batched_tokens=32)
    outs = run_all(tight, prompts, logprob_params(max_tokens=30))
    assert tight.stats().num_preemptions > 0
    for prompt, out in zip(prompts, outs):
        assert_matches(llama_folder, prompt, out.prompt_logprobs, k=3)
    assert tight.block_manager.num_allocated_blocks == 0


def test_abort_mid_prefill_frees_blocks(llama_folder):
    engine = make_engine(llama_folder, max_num_batched_tokens=16)
    request = engine.add_request(random_prompts([80], seed=14)[0], logprob_params())
    engine.step()
    assert engine.block_manager.num_allocated_blocks > 0 and 1 < len(request.prompt_logprobs) < 80
    engine.abort_request(request.request_id)
    assert engine.block_manager.num_allocated_blocks == 0 and not engine.has_unfinished_requests()


def test_slice_skips_positions_already_scored():
    """A recomputed prefix (preemption, a failed step) is not scored twice; the last prompt position is the
    first sample's, not a prompt entry."""
    request = Request("r", list(range(10, 20)), SamplingParams(prompt_logprobs=1))
    piece = prompt_slice(request, row=2, flat_start=7, start=0, end=4)
    assert (piece.row, piece.start, piece.target_ids) == (2, 7, [11, 12, 13, 14])
    request.prompt_logprobs.extend([{}] * 4, [1] * 4)  # entries 1..4 gathered
    piece = prompt_slice(request, row=0, flat_start=0, start=0, end=10)
    assert (piece.start, piece.target_ids) == (4, [15, 16, 17, 18, 19])
    request.prompt_logprobs.extend([{}] * 5, [1] * 5)
    assert prompt_slice(request, row=0, flat_start=0, start=0, end=10) is None
    assert not request.needs_prompt_logits


@pytest.mark.parametrize("value", [-1, 21])
def test_out_of_range_is_refused(value):
    with pytest.raises(InvalidRequest) as err:
        SamplingParams(prompt_logprobs=value)
    assert err.value.param == "prompt_logprobs"
