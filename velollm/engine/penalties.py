"""Penalty state: a request's repetition / presence / frequency penalty inputs, kept on the device across steps.

The sampler rebuilt them from the whole sequence at every step (a host set of prompt + output ids, a tensor of
it, a copy): 45 ms a step for 16 rows of 4,500 tokens. Here a request's state counts each token once, when it
is appended (the prompt at the first step), as vLLM keeps output token counts; a step copies only the ids
whose counts changed. Token lists are append-only (preemption recomputes the KV cache, not the tokens), so
counting the tokens past the last counted one keeps the state equal to a recount.
"""

from __future__ import annotations

from array import array
from collections import Counter

import torch

from velollm.engine.request import Request
from velollm.sampling_params import SamplingParams


class TokenCounts:
    """How often each id occurs in a window of a token sequence, as the distinct ids (in no order) and, with
    `keep_values`, their counts, on the device. The host keeps the truth (`counts`, each id's slot); the
    slots that changed are copied once per step. A removed id's slot takes the last live id (swap-remove), so
    `ids[:num_ids]` is always exactly the live ids."""

    def __init__(self, vocab: int, device: torch.device, keep_values: bool) -> None:
        self.vocab = vocab
        self.device = device
        self.keep_values = keep_values  # False: only the ids go to the device; a live id's count is host-only
        self.counts: dict[int, int] = {}
        self.slot_ids: list[int] = []  # slot -> id, the host mirror of `ids[:num_ids]`
        self._slot_of: dict[int, int] | None = {}  # None: not built since the first count (see `slot_of`)
        self.ids = torch.zeros(0, dtype=torch.long, device=device)
        self.values = torch.zeros(0, dtype=torch.long, device=device)  # the counts, slot by slot
        self._dirty: set[int] = set()  # slots whose device copy is stale

    @property
    def num_ids(self) -> int:
        return len(self.slot_ids)

    @property
    def slot_of(self) -> dict[int, int]:
        """Each live id's slot. Built when first needed: a state of prompt ids that only grows (the
        repetition penalty without a window) never needs it, and it is half the first count's time."""
        if self._slot_of is None:
            self._slot_of = dict(zip(self.slot_ids, range(len(self.slot_ids))))
        return self._slot_of

    def add(self, token_ids: list[int], delta: int) -> None:
        """Count `token_ids` once more each (delta 1) or once less (delta -1). Ids outside the vocabulary
        are not counted (the logits have no column for them)."""
        if not self.counts and delta > 0:
            self._start(token_ids)
            return
        for token_id, times in Counter(token_ids).items():
            if not 0 <= token_id < self.vocab:
                continue
            count = self.counts.get(token_id, 0) + delta * times
            if count <= 0:
                self._remove(token_id)
                continue
            if token_id not in self.counts:
                self._dirty.add(len(self.slot_ids))
                if self._slot_of is not None:
                    self._slot_of[token_id] = len(self.slot_ids)
                self.slot_ids.append(token_id)
            elif self.keep_values:
                self._dirty.add(self.slot_of[token_id])
            self.counts[token_id] = count

    def _start(self, token_ids: list[int]) -> None:
        """The first count (a prompt's thousands of ids) by torch.unique, and on the device at once."""
        if not token_ids:
            return
        ids, counts = torch.unique(_host_tensor(token_ids), return_counts=True)
        if ids[0] < 0 or ids[-1] >= self.vocab:
            keep = (ids >= 0) & (ids < self.vocab)
            ids, counts = ids[keep], counts[keep]
        self.slot_ids = ids.tolist()
        self.counts = dict(zip(self.slot_ids, counts.tolist()))
        self._slot_of = None
        self._dirty.clear()
        self.ids, self.values = _to_device(ids, self.device), _to_device(counts, self.device)

    def _remove(self, token_id: int) -> None:
        del self.counts[token_id]
        slot = self.slot_of.pop(token_id)
        last = self.slot_ids.pop()
        if last != token_id:  # the last live id fills the hole
            self.slot_ids[slot] = last
            self.slot_of[last] = slot
            self._dirty.add(slot)
        self._dirty.discard(len(self.slot_ids))  # the freed last slot is past num_ids: never read

    def sync(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The live ids and their counts (stale without `keep_values`) on the device, after copying the slots
        changed since the last call."""
        if len(self.slot_ids) > self.ids.numel():
            self._grow(max(64, 2 * len(self.slot_ids)))
        if self._dirty:
            slots = sorted(self._dirty)
            ids = self.slot_ids
            update = _to_device(_host_tensor([*slots, *(ids[s] for s in slots), *(self.counts[ids[s]] for s in slots)]),
                                self.device).view(3, -1)
            self.ids.index_copy_(0, update[0], update[1])
            if self.keep_values:
                self.values.index_copy_(0, update[0], update[2])
            self._dirty.clear()
        n = len(self.slot_ids)
        return self.ids[:n], self.values[:n]

    def _grow(self, capacity: int) -> None:
        n = self.ids.numel()
        ids = torch.zeros(capacity, dtype=torch.long, device=self.device)
        values = torch.zeros(capacity, dtype=torch.long, device=self.device)
        ids[:n] = self.ids
        values[:n] = self.values
        self.ids, self.values = ids, values


class PenaltyState:
    """A request's penalty inputs: the ids the repetition penalty sees (prompt + output, the last
    `repetition_window` of them when set) and the output's counts for presence / frequency."""

    def __init__(self, params: SamplingParams, vocab: int, device: torch.device) -> None:
        self.device = device
        self.vocab = vocab
        self.window = params.repetition_window if params.repetition_window > 0 else None
        self.seen = TokenCounts(vocab, device, keep_values=False) if params.repetition_penalty != 1.0 else None
        counted = params.presence_penalty or params.frequency_penalty
        self.output = TokenCounts(vocab, device, keep_values=True) if counted else None
        self.num_tokens = 0  # prompt + output tokens counted
        self.num_output = 0  # output tokens counted

    def update(self, request: Request) -> None:
        """Count the tokens appended since the last update."""
        start, end = self.num_tokens, request.num_tokens
        if self.seen is not None:
            window = self.window or end
            # The window moves from [start - window, start) to [end - window, end): what left it is uncounted
            old_lo, new_lo = max(0, start - window), max(0, end - window)
            self.seen.add(request.token_ids_slice(old_lo, min(start, new_lo)), -1)
            self.seen.add(request.token_ids_slice(max(start, new_lo), end), 1)
        if self.output is not None:
            self.output.add(request.output_token_ids[self.num_output:], 1)
        self.num_tokens, self.num_output = end, len(request.output_token_ids)

    def apply(self, row_logits: torch.Tensor, params: SamplingParams) -> None:
        """Repetition penalty (HF-style, over prompt and output; windowed like Ollama's repeat_last_n), then
        OpenAI presence/frequency penalties over the output. Only the counted ids' logits are read and
        written, with the same float operations a full-vocabulary pass does on them (the others it left
        unchanged), so the result is bitwise that of the recount."""
        if self.seen is not None and self.seen.num_ids:
            ids, _ = self.seen.sync()
            values = row_logits.index_select(0, ids)
            row_logits.index_copy_(0, ids, torch.where(values > 0, values / params.repetition_penalty,
                                                       values * params.repetition_penalty))
        if self.output is not None and self.output.num_ids:
            ids, counts = self.output.sync()
            counts = counts.to(row_logits.dtype)
            penalty = params.frequency_penalty * counts + params.presence_penalty * (counts > 0).to(row_logits.dtype)
            row_logits.index_copy_(0, ids, row_logits.index_select(0, ids) - penalty)

    @classmethod
    def of(cls, request: Request, vocab: int, device: torch.device) -> PenaltyState:
        """The request's state, made at its first penalized step (again if its device or vocabulary changed)."""
        state = request.penalty_state
        if state is None or state.device != device or state.vocab != vocab or state.num_tokens > request.num_tokens:
            state = request.penalty_state = cls(request.params, vocab, device)
        state.update(request)
        return state


def has_penalties(params: SamplingParams) -> bool:
    return params.repetition_penalty != 1.0 or bool(params.presence_penalty) or bool(params.frequency_penalty)


def _host_tensor(token_ids: list[int]) -> torch.Tensor:
    """int64 ids on the host through an array: torch.tensor takes ten times as long for a prompt's ids."""
    return torch.frombuffer(array("q", token_ids), dtype=torch.long)


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on the device without waiting for the stream (pinned + non_blocking on CUDA)."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
