"""Prompt logprobs: during a request's prefill, the logits of every prompt position, not only the last.

The hidden state at position p scores prompt token p + 1, so a chunk [start, end) of the prompt yields the entries
of tokens start + 1 .. end (the last prompt position's logits are the first sample's, not a prompt entry). The full
[rows, vocab] logits of a long prompt would be large: they are computed, normalised and reduced a block of rows at
a time, and only the top-k, the prompt token's logprob and its rank leave the device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from velollm.engine.request import Request


@dataclass(frozen=True)
class PromptSlice:
    """Rows of a step's flattened tokens whose logits score prompt tokens: rows [start, start + len(target_ids))
    of batch row `row`, whose targets are the prompt tokens that follow them."""

    row: int
    start: int
    target_ids: list[int]


@dataclass(frozen=True)
class PromptScores:
    """One slice's entries, on the host: per position the top-k (best first) and the prompt token's logprob."""

    row: int
    logprobs: list[dict[int, float]]
    ranks: list[int]


def prompt_slice(request: Request, row: int, flat_start: int, start: int, end: int) -> PromptSlice | None:
    """The rows of a scheduled chunk [start, end) of `request` (at `flat_start` in the step) that score prompt
    tokens not scored yet (a recomputed prefix, after preemption or a failed step, is not scored twice)."""
    if not request.needs_prompt_logits:
        return None
    first = max(start, len(request.prompt_logprobs) - 1)  # entry i comes from position i - 1
    last = min(end, request.num_prompt_tokens - 1)
    if first >= last:
        return None
    return PromptSlice(row, flat_start + first - start, request.prompt_token_ids[first + 1 : last + 1])


@torch.inference_mode()
def score_prompt(hidden: torch.Tensor, slices: list[PromptSlice], ks: list[int],
                 compute_logits: Callable[[torch.Tensor], torch.Tensor], rows_per_block: int) -> list[PromptScores]:
    """Each slice's entries (`ks[i]`: the top alternatives slice i asks for). Reads back to the host: prefill steps
    that score prompts wait for the device, the others are untouched."""
    out = []
    for piece, k in zip(slices, ks):
        targets = torch.tensor(piece.target_ids, dtype=torch.int64, device=hidden.device)
        rows = hidden[piece.start : piece.start + len(targets)]
        parts = [_score_block(compute_logits(rows[i : i + rows_per_block]), targets[i : i + rows_per_block], k)
                 for i in range(0, len(targets), rows_per_block)]
        top_values, top_ids, chosen, ranks = (torch.cat(t).tolist() for t in zip(*parts))
        entries = []
        for target, values, ids, value in zip(piece.target_ids, top_values, top_ids, chosen):
            entry = dict(zip(ids, values))
            entry[target] = value
            entries.append(entry)
        out.append(PromptScores(piece.row, entries, ranks))
    return out


def _score_block(logits: torch.Tensor, targets: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.gather(1, targets.unsqueeze(1))
    ranks = (logprobs > chosen).sum(dim=-1) + 1
    top_values, top_ids = logprobs.topk(k, dim=-1)
    return top_values, top_ids, chosen.squeeze(1), ranks
