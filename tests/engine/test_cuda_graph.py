"""Decode CUDA graphs: bucket choice and padding on CPU; replay == eager and no host sync on a GPU."""

from __future__ import annotations

import pytest
import torch

from velollm.engine.cuda_graph import (
    DecodeGraphs,
    DecodeStep,
    batch_buckets,
    bucket_for,
    pad_context_lens,
    pad_token_rows,
)
from velollm.engine.forward_context import forward_context
from velollm.engine.llm_engine import LLMEngine

from .helpers import greedy, make_engine, random_prompts, run_all


def test_buckets_cover_every_batch_up_to_the_cap():
    assert batch_buckets(256) == [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256]
    assert batch_buckets(1) == [1]
    assert batch_buckets(20) == [1, 2, 4, 8, 16, 20]
    assert batch_buckets(100) == [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 100]
    assert batch_buckets(1000)[-1] == 256
    assert batch_buckets(64, cap=8) == [1, 2, 4, 8]
    with pytest.raises(ValueError):
        batch_buckets(0)


@pytest.mark.parametrize("max_num_seqs", [1, 3, 20, 64, 100, 256, 512])
def test_bucket_for_is_the_smallest_bucket_that_fits(max_num_seqs):
    buckets = batch_buckets(max_num_seqs)
    for n in range(1, buckets[-1] + 1):
        bucket = bucket_for(buckets, n)
        assert bucket in buckets and bucket >= n
        assert all(b < n for b in buckets if b < bucket)
    assert bucket_for(buckets, buckets[-1] + 1) is None
    assert bucket_for(buckets, 0) is None


def test_padding_rows_write_nothing_and_read_nothing():
    step = DecodeStep(input_ids=[5, 6, 7], positions=[10, 3, 40], slot_mapping=[170, 51, 296],
                      context_lens=[11, 4, 41], block_tables=[[10, 0, 0], [3, 0, 0], [7, 9, 18]])
    rows = pad_token_rows(step, 4)
    assert rows == [5, 6, 7, 0, 10, 3, 40, 0, 170, 51, 296, -1]
    assert pad_context_lens(step, 4) == [11, 4, 41, 0]
    assert pad_token_rows(step, 3) == [5, 6, 7, 10, 3, 40, 170, 51, 296]
    with pytest.raises(ValueError):
        pad_token_rows(step, 2)


def _decode_batch(engine: LLMEngine, prompts: list[list[int]]):
    """Prefill `prompts`, then return the scheduler's next (decode-only) batch."""
    for prompt in prompts:
        engine.add_request(prompt, greedy(8))
    while True:
        batch = engine.scheduler.schedule()
        if max(batch.num_scheduled_tokens) == 1:
            return batch
        engine._collect(engine._launch(batch))


@pytest.mark.parametrize("bucket", [3, 4, 8])
def test_padded_decode_step_matches_unpadded(llama_folder, bucket):
    """The graph's padding contract, on the CPU path: padded rows change neither the real rows nor the cache."""
    engine = make_engine(llama_folder)
    batch = _decode_batch(engine, random_prompts([5, 16, 33], seed=3))
    step = engine.runner.host_step(batch)
    decode = DecodeStep(step.input_ids, step.positions, step.slot_mapping, step.context_lens, step.block_tables)
    inputs = engine.runner.prepare(batch)
    with torch.inference_mode(), forward_context(inputs.metadata):
        expected = engine.runner.model(inputs.input_ids, inputs.positions)
    cache_before = [(k.clone(), v.clone()) for k, v in engine.runner.kv_caches]

    tokens = torch.tensor(pad_token_rows(decode, bucket))
    tables = torch.zeros(bucket, len(step.block_tables[0]), dtype=torch.int32)
    tables[:3] = torch.tensor(step.block_tables, dtype=torch.int32)
    meta = type(inputs.metadata)(
        slot_mapping=tokens[2 * bucket :], block_tables=tables,
        context_lens=torch.tensor(pad_context_lens(decode, bucket), dtype=torch.int32),
        cu_seqlens_q=torch.arange(bucket + 1, dtype=torch.int32), max_query_len=1, kv_caches=engine.runner.kv_caches,
    )
    with torch.inference_mode(), forward_context(meta):
        padded = engine.runner.model(tokens[:bucket], tokens[bucket : 2 * bucket])
    assert padded.shape[0] == bucket
    torch.testing.assert_close(padded[:3], expected, rtol=1e-5, atol=1e-5)
    written = torch.tensor(step.slot_mapping)
    others = torch.ones(engine.runner.num_blocks * engine.runner.block_size, dtype=torch.bool)
    others[written] = False
    for before, after in zip(cache_before, engine.runner.kv_caches):
        for old, new in zip(before, after):
            old, new = old.flatten(0, 1), new.flatten(0, 1)  # [slots, Hkv, D]
            # Untouched slots are bit-identical (never-written slots of the lazy CPU cache may hold NaN).
            torch.testing.assert_close(new[others], old[others], rtol=0, atol=0, equal_nan=True)
            torch.testing.assert_close(new[written], old[written], rtol=1e-4, atol=1e-5)


def test_cpu_runner_stays_eager_and_reports_its_paths(llama_folder):
    engine = make_engine(llama_folder, enforce_eager=False, gpu_memory_utilization=0.5)
    out = run_all(engine, random_prompts([7, 20]), greedy(4))
    paths = engine.runner.paths()
    assert engine.runner.graphs is None and paths["cuda_graphs"] is False
    assert paths["attention"] == "paged/torch" and paths["graph_replays"] == 0
    assert paths["steps"]["prefill"] >= 1 and paths["steps"]["decode_eager"] >= 3
    assert [len(o.token_ids) for o in out] == [4, 4]


class _Replay:
    def __init__(self, fn) -> None:
        self.replay = fn


class EagerReplayGraphs(DecodeGraphs):
    """DecodeGraphs whose 'graph' re-runs the forward on the static buffers: the step logic without CUDA."""

    def capture(self) -> None:
        for bucket in reversed(self.buckets):
            self._fill_padding(bucket)
            self.graphs[bucket] = self._capture_one(bucket, None)

    def _capture_one(self, bucket, pool):
        return _Replay(lambda: self._forward(bucket))


def test_static_buffer_steps_give_the_eager_tokens_on_cpu(llama_folder):
    """Everything of a graph step but the capture: padding into the static buffers, their views in the
    forward context, reading the static output back, for batch sizes that pad and some that do not."""
    prompts = random_prompts([5, 17, 33, 40, 9, 70, 3], seed=1)
    want = run_all(make_engine(llama_folder, max_num_seqs=16), prompts, greedy(30))
    engine = make_engine(llama_folder, max_num_seqs=16)
    runner = engine.runner
    with torch.inference_mode():
        runner.graphs = EagerReplayGraphs(runner.model, runner.kv_caches, batch_buckets(16), 64,
                                          runner.config.hidden_size, runner.dtype, runner.device)
        runner.graphs.capture()
    got = run_all(engine, prompts, greedy(30))
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    steps = runner.paths()["steps"]
    assert steps["decode_graph"] == runner.paths()["graph_replays"] >= 29 and steps["decode_eager"] == 0


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _cuda_engine(folder, **kwargs) -> LLMEngine:
    return make_engine(folder, device="cuda", max_num_seqs=16, kv_cache_memory=64 << 20, **kwargs)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("num_prompts", [1, 3, 9])
def test_graph_replay_gives_the_eager_tokens(llama_folder, num_prompts):
    pytest.importorskip("triton")
    prompts = random_prompts([5 + 7 * i for i in range(num_prompts)], seed=num_prompts)
    graphed = _cuda_engine(llama_folder)
    eager = _cuda_engine(llama_folder, enforce_eager=True)
    assert graphed.runner.graphs is not None and eager.runner.graphs is None
    got = run_all(graphed, prompts, greedy(20))
    want = run_all(eager, prompts, greedy(20))
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    paths = graphed.runner.paths()
    assert paths["attention"] == "paged/triton" and paths["graph_replays"] >= 19
    assert paths["steps"]["decode_eager"] == 0


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("async_scheduling", [False, True], ids=["sync", "async"])
def test_steps_sync_with_the_host_only_to_read_the_ids(llama_folder, monkeypatch, async_scheduling):
    """Scheduling, inputs, the forward pass (eager and graphs), sampling and output processing never wait
    for the device; only SampledTokens.to_host does (under async scheduling, after the next step is queued)."""
    pytest.importorskip("triton")
    from velollm.engine.sampler import SampledTokens

    engine = _cuda_engine(llama_folder, async_scheduling=async_scheduling)
    read = SampledTokens.to_host

    def allowed_read(self):
        torch.cuda.set_sync_debug_mode("default")
        try:
            return read(self)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    monkeypatch.setattr(SampledTokens, "to_host", allowed_read)
    requests = [engine.add_request(prompt, greedy(6)) for prompt in random_prompts([5, 40, 17])]
    torch.cuda.set_sync_debug_mode("error")
    try:
        while engine.has_unfinished_requests():
            engine.step()  # a sync would fail the step: its requests would be retried, then fail alone
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert [len(r.output_token_ids) for r in requests] == [6, 6, 6]
    assert engine.stats().num_preemptions == 0 and not engine.scheduler.suspects
    assert engine.runner.paths()["graph_replays"] > 0


@pytest.mark.parametrize("num_tokens", [1, 16, 33])
def test_dry_forward_writes_no_kv(llama_folder, num_tokens):
    """The profile run and the start-up kernel warm-up (CUDA) go through dry_forward: no cache write."""
    engine = make_engine(llama_folder, max_num_seqs=8)
    runner = engine.runner
    before = [(k.clone(), v.clone()) for k, v in runner.kv_caches]
    logits = runner.dry_forward(num_tokens)
    assert logits.shape == (min(8, num_tokens), runner.config.vocab_size) and logits.isfinite().all()
    for (k0, v0), (k1, v1) in zip(before, runner.kv_caches):
        torch.testing.assert_close(k1, k0, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(v1, v0, rtol=0, atol=0, equal_nan=True)
