"""A step's inputs: the scheduled batch as host lists (HostStep), then as device tensors with their attention
metadata (StepInputs). Async scheduling's placeholder inputs are recorded here and filled on the device."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain

import torch

from velollm.engine.cuda_graph import host_tensor
from velollm.engine.forward_context import AttentionMetadata
from velollm.engine.placeholders import PendingTokens, TokenScatter
from velollm.engine.prompt_logprobs import PromptSlice, prompt_slice
from velollm.engine.request import Request
from velollm.engine.scheduler import ScheduledBatch


@dataclass
class StepInputs:
    input_ids: torch.Tensor
    positions: torch.Tensor
    metadata: AttentionMetadata
    logits_indices: torch.Tensor
    sampled_rows: list[int]  # batch rows whose logits are sampled this step


@dataclass
class HostStep:
    """A step's inputs as host lists, before any device copy."""

    input_ids: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    slot_mapping: list[int] = field(default_factory=list)
    context_lens: list[int] = field(default_factory=list)
    cu_seqlens_q: list[int] = field(default_factory=lambda: [0])
    block_tables: list[list[int]] = field(default_factory=list)  # padded with 0 to one width
    logits_indices: list[int] = field(default_factory=list)
    sampled_rows: list[int] = field(default_factory=list)
    max_query_len: int = 0
    no_cached_prefix: bool = True  # every row starts at position 0 (AttentionMetadata.no_cached_prefix)
    # Async scheduling: input_ids[placeholder_positions[i]] is pending.token_ids[placeholder_rows[i]].
    placeholder_positions: list[int] = field(default_factory=list)
    placeholder_rows: list[int] = field(default_factory=list)
    prompt_slices: list[PromptSlice] = field(default_factory=list)  # rows whose logits score prompt tokens


def build_host_step(batch: ScheduledBatch, block_size: int, pending: PendingTokens | None = None) -> HostStep:
    """`pending`: the ids the previous step sampled, for rows whose last token is a placeholder."""
    step = HostStep(max_query_len=max(batch.num_scheduled_tokens))
    bs = block_size
    for row, (request, num_new) in enumerate(zip(batch.requests, batch.num_scheduled_tokens)):
        start = request.num_computed_tokens
        end = start + num_new
        table = request.block_table
        if start:
            step.no_cached_prefix = False
        if num_new == 1:  # a decode row: the common case, kept cheap (it runs for every row, every step)
            if start < request.num_tokens:
                step.input_ids.append(request.token_ids_slice(start, end)[0])
            else:
                _add_placeholder(step, pending, request)
            step.positions.append(start)
            step.slot_mapping.append(table[start // bs] * bs + start % bs)
        else:
            step.input_ids.extend(request.token_ids_slice(start, min(end, request.num_tokens)))
            if end > request.num_tokens:  # at most the last token: one step is in flight at a time
                _add_placeholder(step, pending, request)
            step.positions.extend(range(start, end))
            step.slot_mapping.extend(table[p // bs] * bs + p % bs for p in range(start, end))
        step.context_lens.append(end)
        if request.prompt_logprobs is not None:
            piece = prompt_slice(request, row, step.cu_seqlens_q[-1], start, end)
            if piece is not None:
                step.prompt_slices.append(piece)
        step.cu_seqlens_q.append(step.cu_seqlens_q[-1] + num_new)
        if batch.samples(row):
            step.logits_indices.append(step.cu_seqlens_q[-1] - 1)
            step.sampled_rows.append(row)
    max_blocks = max(len(r.block_table) for r in batch.requests)
    step.block_tables = [r.block_table + [0] * (max_blocks - len(r.block_table)) for r in batch.requests]
    return step


def to_device(parts: list[list[int]], dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    """One host->device copy for several index lists (pinned and asynchronous on CUDA), split back."""
    flat = list(chain.from_iterable(parts))
    if device.type == "cuda":
        packed = host_tensor(flat, dtype, pin=True).to(device, non_blocking=True)
    else:
        packed = host_tensor(flat, dtype)
    return list(packed.split([len(p) for p in parts]))


def step_inputs(step: HostStep, kv_caches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
                pending: PendingTokens | None = None) -> StepInputs:
    """`step` on `device`, its placeholder inputs filled from `pending` there."""
    input_ids, positions, slot_mapping, logits_indices, placeholder_positions, placeholder_rows = to_device(
        [step.input_ids, step.positions, step.slot_mapping, step.logits_indices, step.placeholder_positions,
         step.placeholder_rows], torch.int64, device)
    if step.placeholder_positions and pending is not None:
        TokenScatter(pending.token_ids, placeholder_positions, placeholder_rows).apply(input_ids)
    tables = step.block_tables
    context_lens, cu_seqlens_q, block_tables = to_device(
        [step.context_lens, step.cu_seqlens_q, list(chain.from_iterable(tables))], torch.int32, device)
    metadata = AttentionMetadata(
        slot_mapping=slot_mapping,
        block_tables=block_tables.view(len(tables), len(tables[0])),
        context_lens=context_lens,
        cu_seqlens_q=cu_seqlens_q,
        max_query_len=step.max_query_len,
        kv_caches=kv_caches,
        no_cached_prefix=step.no_cached_prefix,
    )
    return StepInputs(input_ids, positions, metadata, logits_indices, step.sampled_rows)


def graph_scatter(step: HostStep, pending: PendingTokens | None, device: torch.device) -> TokenScatter | None:
    """What fills a replayed decode graph's placeholder inputs on the device; None when it has none."""
    if not step.placeholder_positions or pending is None:
        return None
    positions, rows = to_device([step.placeholder_positions, step.placeholder_rows], torch.int64, device)
    return TokenScatter(pending.token_ids, positions, rows)


def _add_placeholder(step: HostStep, pending: PendingTokens | None, request: Request) -> None:
    """The row's input is the id the step still on the device sampled: 0 here, scattered in on the device."""
    if pending is None:
        raise RuntimeError(f"request {request.request_id} has a placeholder but no step is in flight")
    step.placeholder_positions.append(len(step.input_ids))
    step.placeholder_rows.append(pending.row(request))
    step.input_ids.append(0)
