"""Async scheduling (EngineConfig.async_scheduling): step N+1 is launched before step N's ids are read.

Every case runs through the same engine with the flag on and off and must give the same tokens; each checks
that the KV cache is empty afterwards, and that the overlapped path (placeholder inputs filled on the device)
really ran where it should.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.greedy_agreement import assert_all_greedy_agree, assert_greedy_agrees
from velollm.engine.llm_engine import LLMEngine
from velollm.outputs import RequestOutput
from velollm.sampling_params import SamplingParams, StructuredOutput

from .helpers import greedy, make_engine, random_prompts, run_all


class PlaceholderCounter:
    """Counts the input ids that came from the previous step's sampled ids on the device."""

    def __init__(self, engine: LLMEngine) -> None:
        self.count = 0
        host_step = engine.runner.host_step

        def counting(batch, pending=None):
            step = host_step(batch, pending)
            self.count += len(step.placeholder_positions)
            return step

        engine.runner.host_step = counting


def async_engine(folder, **kwargs) -> tuple[LLMEngine, PlaceholderCounter]:
    engine = make_engine(folder, async_scheduling=True, **kwargs)
    return engine, PlaceholderCounter(engine)


def both(folder, prompts, params, **kwargs) -> tuple[list[RequestOutput], list[RequestOutput], LLMEngine, int]:
    """Outputs without and with async scheduling, the async engine and its placeholder count."""
    reference = run_all(make_engine(folder, **kwargs), prompts, params)
    engine, counter = async_engine(folder, **kwargs)
    outputs = run_all(engine, prompts, params)
    assert engine.block_manager.num_allocated_blocks == 0
    assert not engine.has_unfinished_requests()
    return reference, outputs, engine, counter.count


def same(a: list[RequestOutput], b: list[RequestOutput]) -> None:
    assert [(o.token_ids, o.text, o.finish_reason) for o in a] == [(o.token_ids, o.text, o.finish_reason) for o in b]


def test_batched_greedy_equals_sync_and_overlaps(llama_folder):
    prompts = random_prompts([3, 9, 15, 16, 17, 24, 31, 32, 33, 40, 47, 5, 64, 70, 12, 1], seed=11)
    reference, outputs, engine, placeholders = both(llama_folder, prompts, greedy(24, logprobs=2))
    same(reference, outputs)
    for ref, out in zip(reference, outputs):
        assert [sorted(lp) for lp in ref.logprobs] == [sorted(lp) for lp in out.logprobs]
    assert placeholders >= 16 * 20  # nearly every decode input came from the device
    stats = engine.stats()
    assert stats.num_generation_tokens == 16 * 24


def test_requests_that_end_early_waste_one_row_and_free_their_blocks(llama_folder):
    prompts = random_prompts([10, 20, 30, 40], seed=3)
    params = [greedy(n) for n in (1, 2, 7, 30)]
    reference = [run_all(make_engine(llama_folder), [p], sp)[0] for p, sp in zip(prompts, params)]
    engine, counter = async_engine(llama_folder)
    outputs = run_all(engine, prompts, params)
    same(reference, outputs)
    assert [len(o.token_ids) for o in outputs] == [1, 2, 7, 30]
    assert engine.block_manager.num_allocated_blocks == 0 and counter.count > 0


def test_forced_preemption(llama_folder):
    prompts = random_prompts([30, 41, 25, 36, 50, 19, 44, 28], seed=13)
    block_bytes = make_engine(llama_folder).runner.kv_bytes_per_block()
    reference, outputs, engine, placeholders = both(llama_folder, prompts, greedy(40),
                                                    kv_cache_memory=14 * block_bytes)
    assert engine.stats().num_preemptions > 0
    same(reference, outputs)
    assert placeholders > 0


def test_chunked_prefill_and_eos(llama_folder):
    prompts = random_prompts([70, 90, 33, 8], seed=19)
    params = SamplingParams(temperature=0.0, max_tokens=40)  # EOS ends some early
    reference, outputs, _, _ = both(llama_folder, prompts, params, max_num_batched_tokens=24)
    same(reference, outputs)


def test_stop_strings_and_stop_ids(llama_folder):
    engine = make_engine(llama_folder)
    prompt = random_prompts([12], seed=23)[0]
    [free] = run_all(engine, [prompt], greedy(24))
    stop = free.text[6:9]
    params = [greedy(24, stop=[stop]), greedy(24, stop_token_ids=[free.token_ids[5]]),
              greedy(24, stop=[stop], include_stop_str_in_output=True)]
    for sp in params:
        reference, outputs, _, _ = both(llama_folder, [prompt, random_prompts([30], seed=29)[0]], sp)
        same(reference, outputs)
        assert outputs[0].finish_reason == "stop"


def test_streamed_deltas_equal_the_sync_engine(llama_folder):
    """With output_kind cumulative streaming, the concatenated deltas give the same text and tokens."""
    prompts = random_prompts([7, 19], seed=31)
    params = greedy(20, stop=["zz"])
    reference, outputs, _, _ = both(llama_folder, prompts, params)
    same(reference, outputs)


def test_seeded_sampling_is_reproducible(llama_folder):
    prompts = random_prompts([9, 17, 25], seed=37)
    params = SamplingParams(temperature=0.9, top_p=0.9, top_k=40, min_p=0.02, seed=5, max_tokens=24,
                            ignore_eos=True, logprobs=1)
    reference, outputs, _, placeholders = both(llama_folder, prompts, params)
    same(reference, outputs)
    again = run_all(make_engine(llama_folder, async_scheduling=True), prompts, params)
    same(outputs, again)
    assert placeholders > 0


def test_min_tokens_counts_placeholders(llama_folder):
    prompts = random_prompts([11, 13], seed=41)
    params = SamplingParams(temperature=0.0, max_tokens=30, min_tokens=12)
    reference, outputs, _, _ = both(llama_folder, prompts, params)
    same(reference, outputs)
    assert all(len(o.token_ids) >= 12 for o in outputs)


def test_penalties_fall_back_to_sync_and_agree(llama_folder):
    prompts = random_prompts([9, 21], seed=43)
    params = greedy(16, repetition_penalty=1.3, presence_penalty=0.4, frequency_penalty=0.3)
    reference, outputs, _, placeholders = both(llama_folder, prompts, params)
    same(reference, outputs)
    assert placeholders == 0  # each step waits for the previous one's ids


def test_grammar_request_mixed_with_plain_ones(llama_folder):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    constrained = SamplingParams(temperature=1.0, seed=3, max_tokens=60,
                                 structured_output=StructuredOutput("json_schema", json.dumps(schema)))
    prompts = random_prompts([7, 19, 33], seed=47)
    params = [greedy(30), constrained, greedy(45)]

    def run(engine: LLMEngine) -> list[RequestOutput]:
        outputs = run_all(engine, prompts, params)
        assert engine.block_manager.num_allocated_blocks == 0
        return outputs

    reference = run(make_engine(llama_folder))
    engine, counter = async_engine(llama_folder)
    outputs = run(engine)
    same(reference, outputs)
    jsonschema.validate(json.loads(outputs[1].text), schema)
    assert counter.count > 0  # the plain requests overlap once the constrained one is done


def test_the_grammar_bitmask_is_not_refilled_before_the_step_that_copied_it_is_read(llama_folder, monkeypatch):
    """StructuredOutputManager keeps one host bitmask (pinned on CUDA) and copies it to the device without
    waiting (non_blocking): filling it again for step N+1 before step N's copy ran would mask step N with
    step N+1's rows. The engine reads a constrained step's ids (a sync) before it samples again: checked here
    by structure, on every fill, with plain requests overlapping around the constrained ones."""
    from velollm.engine.sampler import SampledTokens
    from velollm.engine.text.structured_output import StructuredOutputManager

    unread: set[int] = set()  # ids of SampledTokens whose sampling filled the bitmask, not read yet
    fills = []
    fill, to_host = StructuredOutputManager.fill_bitmask, SampledTokens.to_host

    def checked_fill(self, matchers):
        assert not unread, "the bitmask was refilled while a step that copied it was still in flight"
        rows = fill(self, matchers)
        fills.append(bool(rows))
        return rows

    def reading(self):
        unread.discard(id(self))
        return to_host(self)

    monkeypatch.setattr(StructuredOutputManager, "fill_bitmask", checked_fill)
    monkeypatch.setattr(SampledTokens, "to_host", reading)
    engine, counter = async_engine(llama_folder)
    sample = engine._sample

    def sampling(logits, requests):
        before = len(fills)
        sampled = sample(logits, requests)
        if any(fills[before:]):
            unread.add(id(sampled))
        return sampled

    engine._sample = sampling
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    constrained = [SamplingParams(temperature=1.0, seed=s, max_tokens=40,
                                  structured_output=StructuredOutput("json_schema", json.dumps(schema)))
                   for s in (5, 6)]
    run_all(engine, random_prompts([7, 19, 33, 11], seed=59), [greedy(30), constrained[0], greedy(45), constrained[1]])
    assert sum(fills) > 2 and counter.count > 0 and not unread


def test_abort_mid_stream(llama_folder):
    prompts = random_prompts([14, 22, 30], seed=53)
    reference = run_all(make_engine(llama_folder), prompts, greedy(20, logprobs=2))
    engine, _ = async_engine(llama_folder)
    requests = [engine.add_request(p, greedy(20, logprobs=2)) for p in prompts]
    outs = {r.request_id: RequestOutput(r.request_id, p) for r, p in zip(requests, prompts, strict=True)}
    for _ in range(6):
        for delta in engine.step():
            outs[delta.request_id].add(delta)
    aborted = requests[1].request_id
    delta = engine.abort_request(aborted)  # its row is in the step still in flight
    outs[aborted].add(delta)
    while engine.has_unfinished_requests():
        for delta in engine.step():
            assert delta.request_id != aborted
            outs[delta.request_id].add(delta)
    cut = outs[aborted]
    assert cut.finish_reason == "abort" and 0 < len(cut.token_ids) < 20
    # the rows after the abort run in a smaller batch: equal up to a near tie (tests/greedy_agreement.py)
    n = len(cut.token_ids)
    assert_greedy_agrees(cut.token_ids, cut.logprobs, reference[1].token_ids[:n], reference[1].logprobs[:n])
    assert_all_greedy_agree([outs[requests[0].request_id], outs[requests[2].request_id]],
                            [reference[0], reference[2]], what="synchronous")
    assert engine.block_manager.num_allocated_blocks == 0


def test_abort_everything_in_flight(llama_folder):
    engine, _ = async_engine(llama_folder)
    requests = [engine.add_request(p, greedy(64)) for p in random_prompts([20 + i for i in range(12)], seed=17)]
    for _ in range(3):
        engine.step()
    for request in requests:
        engine.abort_request(request.request_id)
    while engine.has_unfinished_requests():  # reads (and drops) the step still in flight
        assert engine.step() == []
    assert engine.block_manager.num_allocated_blocks == 0


def test_prefix_cache_hits(llama_folder):
    engine, counter = async_engine(llama_folder)
    prefix = random_prompts([100], seed=5)[0]
    [first] = run_all(engine, [prefix + [7, 8, 9]], greedy(8, logprobs=2))
    [second] = run_all(engine, [prefix + [10, 11, 12, 13]], greedy(8, logprobs=2))
    assert second.num_cached_tokens == 96
    [fresh] = run_all(make_engine(llama_folder), [prefix + [10, 11, 12, 13]], greedy(8, logprobs=2))
    # cached and uncached prefixes sum in other orders: equal up to a near tie (tests/greedy_agreement.py)
    assert_all_greedy_agree([second], [fresh], what="uncached")
    [same_prompt] = run_all(engine, [prefix + [7, 8, 9]], greedy(8, logprobs=2))  # its generated blocks are cached too
    assert_all_greedy_agree([same_prompt], [first], what="uncached")
    assert engine.block_manager.num_allocated_blocks == 0
    assert all(block.ref_count == 0 for block in engine.block_manager.blocks)
    assert counter.count > 0


@pytest.mark.parametrize("async_scheduling", [False, True])
def test_llm_api_option(llama_folder, async_scheduling):
    from velollm import LLM

    llm = LLM(str(llama_folder), device="cpu", dtype="float32", kv_cache_memory=32 << 20,
              async_scheduling=async_scheduling)
    try:
        outs = llm.generate(random_prompts([5, 9], seed=59), greedy(6))
        assert [len(o.token_ids) for o in outs] == [6, 6]
        assert llm.engine.config.async_scheduling is async_scheduling
        assert llm.engine.block_manager.num_allocated_blocks == 0
    finally:
        llm.close()


def test_placeholder_scatter_fills_the_decode_graph_buffer(llama_folder):
    """The CUDA-graph path's contract on the CPU: ids scattered into the padded static buffer land on the
    rows of their requests, and positions and slots stay as the host wrote them."""
    import torch

    from velollm.engine.cuda_graph import DecodeStep, pad_token_rows
    from velollm.engine.placeholders import PendingTokens, TokenScatter

    engine = make_engine(llama_folder, async_scheduling=True)
    for prompt in random_prompts([5, 16, 33], seed=3):
        engine.add_request(prompt, greedy(8))
    while engine._in_flight is None or max(engine._in_flight.batch.num_scheduled_tokens) > 1:
        engine.step()
    previous = engine._in_flight
    pending = previous.pending()
    batch = engine.scheduler.schedule()
    step = engine.runner.host_step(batch, pending)
    assert len(step.placeholder_positions) == 3 and step.input_ids == [0, 0, 0]
    decode = DecodeStep(step.input_ids, step.positions, step.slot_mapping, step.context_lens, step.block_tables)
    bucket = 4
    tokens = torch.tensor(pad_token_rows(decode, bucket))
    scatter = TokenScatter(pending.token_ids, torch.tensor(step.placeholder_positions),
                           torch.tensor(step.placeholder_rows))
    scatter.apply(tokens[:bucket])
    ids = pending.token_ids.tolist()
    expected = [ids[pending.rows[r]] for r in batch.requests]
    known = DecodeStep(expected, step.positions, step.slot_mapping, step.context_lens, step.block_tables)
    assert tokens.tolist() == pad_token_rows(known, bucket)


def test_the_wasted_row_of_a_request_at_the_context_limit(llama_folder):
    """A request that the context ends still gets its wasted row at the last position: it must fit."""
    prompts = random_prompts([60, 47], seed=61)
    params = SamplingParams(temperature=0.0, ignore_eos=True)  # runs to the context length
    reference, outputs, _, placeholders = both(llama_folder, prompts, params, max_model_len=64)
    same(reference, outputs)
    assert len(outputs[0].token_ids) == 4 and {o.finish_reason for o in outputs} == {"length"}
    assert placeholders > 0


def test_sleep_with_a_step_in_flight_then_wake(llama_folder):
    engine, _ = async_engine(llama_folder)
    prompts = random_prompts([12, 18], seed=67)
    for prompt in prompts:
        engine.add_request(prompt, greedy(16))
    for _ in range(3):
        engine.step()
    engine.sleep()
    assert not engine.has_unfinished_requests()
    engine.wake()
    assert [o.token_ids for o in run_all(engine, prompts, greedy(16))] == \
        [o.token_ids for o in run_all(make_engine(llama_folder), prompts, greedy(16))]
    assert engine.block_manager.num_allocated_blocks == 0
