"""A step's inputs from a scheduled batch, without a model: host lists (slots from block tables, cu_seqlens,
sampled rows, placeholders) and their device tensors (CPU here: the pinned copy is CUDA's only)."""

from __future__ import annotations

import pytest
import torch

from velollm.engine.placeholders import PendingTokens
from velollm.engine.request import Request
from velollm.engine.scheduler import ScheduledBatch
from velollm.engine.step_inputs import (
    build_host_step,
    graph_scatter,
    step_inputs,
    to_device,
)
from velollm.sampling_params import SamplingParams

BLOCK = 4
CPU = torch.device("cpu")


def _request(name: str, prompt: list[int], block_table: list[int], num_computed: int = 0,
             output: list[int] | None = None) -> Request:
    request = Request(name, prompt, SamplingParams(max_tokens=8))
    request.block_table = block_table
    request.num_computed_tokens = num_computed
    request.output_token_ids = list(output or [])
    return request


def test_prefill_chunk_and_decode_row():
    chunked = _request("a", list(range(10, 20)), [7, 3, 5])  # 10 tokens, first chunk of 6: not sampled
    decoding = _request("b", [1, 2, 3, 4, 5], [2, 9], num_computed=5, output=[42])
    step = build_host_step(ScheduledBatch([chunked, decoding], [6, 1]), BLOCK)
    assert step.input_ids == [10, 11, 12, 13, 14, 15, 42]
    assert step.positions == [0, 1, 2, 3, 4, 5, 5]
    assert step.slot_mapping == [28, 29, 30, 31, 12, 13, 9 * BLOCK + 1]
    assert step.context_lens == [6, 6] and step.cu_seqlens_q == [0, 6, 7]
    assert step.logits_indices == [6] and step.sampled_rows == [1]
    assert step.block_tables == [[7, 3, 5], [2, 9, 0]]
    assert step.max_query_len == 6 and not step.no_cached_prefix


def test_placeholders_come_from_the_step_in_flight():
    request = _request("a", [1, 2, 3], [4], num_computed=3)
    request.num_placeholders = 1  # its next input was sampled on the device, not read yet
    pending = PendingTokens(torch.tensor([77, 55]), {request: 1})
    batch = ScheduledBatch([request], [1])
    with pytest.raises(RuntimeError, match="no step is in flight"):
        build_host_step(batch, BLOCK)
    step = build_host_step(batch, BLOCK, pending)
    assert step.input_ids == [0] and step.placeholder_positions == [0] and step.placeholder_rows == [1]
    inputs = step_inputs(step, [], CPU, pending)
    assert inputs.input_ids.tolist() == [55]
    scatter = graph_scatter(step, pending, CPU)
    tokens = torch.zeros(2, dtype=torch.int64)
    scatter.apply(tokens)
    assert tokens.tolist() == [55, 0]
    assert graph_scatter(build_host_step(ScheduledBatch([_request("b", [1, 2], [0])], [2]), BLOCK), pending,
                         CPU) is None


def test_step_inputs_on_the_device():
    first = _request("a", [5, 6, 7], [1])
    second = _request("b", [8, 9, 10, 11, 12], [2, 3])
    step = build_host_step(ScheduledBatch([first, second], [3, 5]), BLOCK)
    assert step.no_cached_prefix
    inputs = step_inputs(step, [], CPU)
    meta = inputs.metadata
    assert inputs.input_ids.tolist() == [5, 6, 7, 8, 9, 10, 11, 12]
    assert inputs.logits_indices.tolist() == [2, 7] and inputs.sampled_rows == [0, 1]
    assert meta.block_tables.tolist() == [[1, 0], [2, 3]] and meta.block_tables.dtype == torch.int32
    assert meta.cu_seqlens_q.tolist() == [0, 3, 8] and meta.context_lens.tolist() == [3, 5]
    assert meta.slot_mapping.tolist() == [4, 5, 6, 8, 9, 10, 11, 12] and meta.max_query_len == 5
    parts = to_device([[1, 2], [], [3]], torch.int64, CPU)
    assert [p.tolist() for p in parts] == [[1, 2], [], [3]]
