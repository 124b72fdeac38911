"""Sampler: logits processors (allowed ids, bias, min_tokens, penalties), greedy or seeded sampling, top-k logprobs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from velollm.engine.penalties import PenaltyState, has_penalties
from velollm.engine.request import Request
from velollm.sampling_params import SamplingParams

_NEG_INF = float("-inf")


@dataclass(frozen=True)
class _TopLogprobs:
    top_values: torch.Tensor  # [rows, max_k]
    top_ids: torch.Tensor  # [rows, max_k]
    chosen: torch.Tensor  # [rows]: the sampled token's logprob
    ks: list[int | None]  # per row: how many the request asked for (None: none)


@dataclass(frozen=True)
class SampledTokens:
    """A step's sampled ids (and the logprobs asked for). `token_ids` stays on the device for the next step's
    inputs; a copy to the host starts at once, and `to_host` waits for that copy only (the step's one sync),
    not for work queued after it, such as the next step under async scheduling."""

    token_ids: torch.Tensor  # int64 [rows], on the device
    logprobs: _TopLogprobs | None
    host: list[torch.Tensor]  # ids, then top values, top ids, chosen: on the host (pinned on CUDA)
    ready: torch.cuda.Event | None  # recorded after the copies (CUDA)

    @classmethod
    def start_copy(cls, token_ids: torch.Tensor, logprobs: _TopLogprobs | None = None) -> SampledTokens:
        tensors = [token_ids]
        if logprobs is not None:
            tensors += [logprobs.top_values, logprobs.top_ids, logprobs.chosen]
        if token_ids.device.type != "cuda":
            return cls(token_ids, logprobs, tensors, None)
        host = [t.to("cpu", non_blocking=True) for t in tensors]  # pinned destinations: asynchronous
        ready = torch.cuda.Event()
        ready.record(torch.cuda.current_stream(token_ids.device))  # the copies' stream, on cuda:N too
        return cls(token_ids, logprobs, host, ready)

    def to_host(self) -> tuple[list[int], list[dict[int, float] | None]]:
        if self.ready is not None:
            self.ready.synchronize()
        ids = self.host[0].tolist()
        if self.logprobs is None:
            return ids, [None] * len(ids)
        top_values, top_ids, chosen = (t.tolist() for t in self.host[1:])
        return ids, _host_logprobs(self.logprobs.ks, top_values, top_ids, chosen, ids)


def _on_device(data: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small host list on the device without waiting for the stream (pinned + non_blocking on CUDA), so
    sampling queues behind the forward pass instead of ending the overlap of async scheduling."""
    tensor = torch.tensor(data, dtype=dtype)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


@dataclass(frozen=True)
class RequestTensors:
    """A request's constant processor inputs, on the device. Built once per request: building them every
    step cost milliseconds per row (a host list to a tensor, and a copy), 40 ms a step for 16 rows of
    20,000 allowed ids."""

    device: torch.device
    allowed: torch.Tensor | None  # allowed_token_ids
    bias_ids: torch.Tensor | None  # logit_bias' ids, and their values in `bias`
    bias: torch.Tensor | None
    banned: torch.Tensor | None  # EOS and stop ids, masked until min_tokens (None: min_tokens leaves them)

    @classmethod
    def build(cls, params: SamplingParams, eos_token_ids: frozenset[int], vocab: int, dtype: torch.dtype,
              device: torch.device) -> RequestTensors:
        allowed = bias_ids = bias = banned = None
        if params.allowed_token_ids is not None:
            allowed = _on_device(params.allowed_token_ids, torch.long, device)
        if params.logit_bias:
            ids = [i for i in params.logit_bias if 0 <= i < vocab]
            bias_ids = _on_device(ids, torch.long, device)
            bias = _on_device([params.logit_bias[i] for i in ids], dtype, device)
        if params.min_tokens:
            ids = [i for i in (*eos_token_ids, *params.stop_token_ids) if i < vocab]
            # Allowed ids that are all banned: they stay, as a finished grammar's EOS does (else id 0 came out)
            if params.allowed_token_ids is None or not set(params.allowed_token_ids) <= set(ids):
                banned = _on_device(ids, torch.long, device)
        return cls(device, allowed, bias_ids, bias, banned)


class Sampler:
    def __init__(self, vocab_size: int, eos_token_ids: frozenset[int]) -> None:
        self.vocab_size = vocab_size
        self.eos_token_ids = eos_token_ids

    @torch.inference_mode()  # the runner's logits are inference tensors: edited in place here
    def __call__(self, logits: torch.Tensor, requests: Sequence[Request],
                 apply_grammar: Callable[[torch.Tensor], None] | None = None,
                 ) -> tuple[list[int], list[dict[int, float] | None]]:
        """logits: float32 [len(requests), vocab]. Returns the sampled ids and per-row logprobs (or None)."""
        return self.sample_on_device(logits, requests, apply_grammar).to_host()

    @torch.inference_mode()
    def sample_on_device(self, logits: torch.Tensor, requests: Sequence[Request],
                         apply_grammar: Callable[[torch.Tensor], None] | None = None) -> SampledTokens:
        """Sample without a host sync. `apply_grammar` masks the rows of constrained requests in place
        (after the processors)."""
        logits = self.process(logits, requests)
        if apply_grammar is not None:
            apply_grammar(logits)
        want_logprobs = [r.params.logprobs is not None for r in requests]
        logprobs = torch.log_softmax(logits, dim=-1) if any(want_logprobs) else None
        token_ids = self.sample(logits, requests)
        if logprobs is None:
            return SampledTokens.start_copy(token_ids)
        return SampledTokens.start_copy(token_ids, _top_logprobs(logprobs, token_ids, requests))

    def process(self, logits: torch.Tensor, requests: Sequence[Request]) -> torch.Tensor:
        for row, request in enumerate(requests):
            params = request.params
            tensors = self.request_tensors(request, logits)
            if tensors.allowed is not None:  # every other id out (the ids are in the vocabulary)
                kept = logits[row].index_select(0, tensors.allowed)
                logits[row].fill_(_NEG_INF).index_copy_(0, tensors.allowed, kept)
            if tensors.bias_ids is not None:
                logits[row].index_add_(0, tensors.bias_ids, tensors.bias)
            # A finished grammar allows only EOS: banning it too would leave nothing to sample. Placeholders
            # count: their ids are not on the host yet, but they are outputs.
            num_output = len(request.output_token_ids) + request.num_placeholders
            if num_output < params.min_tokens and request.grammar is None and tensors.banned is not None:
                logits[row].index_fill_(0, tensors.banned, _NEG_INF)
            if has_penalties(params):
                PenaltyState.of(request, logits.shape[1], logits.device).apply(logits[row], params)
        return logits

    def request_tensors(self, request: Request, logits: torch.Tensor) -> RequestTensors:
        """The request's processor tensors, built at its first step and kept on it."""
        tensors = request.sampling_tensors
        if tensors is None or tensors.device != logits.device:
            tensors = request.sampling_tensors = RequestTensors.build(
                request.params, self.eos_token_ids, logits.shape[1], logits.dtype, logits.device)
        return tensors

    def sample(self, logits: torch.Tensor, requests: Sequence[Request]) -> torch.Tensor:
        greedy = [r.params.greedy for r in requests]
        if all(greedy):
            return logits.argmax(dim=-1)
        device = logits.device
        temperature = _on_device([1.0 if g else r.params.temperature for g, r in zip(greedy, requests)],
                                 logits.dtype, device)
        scaled = logits / temperature.unsqueeze(1)
        top_k = [r.params.top_k if 0 < r.params.top_k < self.vocab_size else self.vocab_size for r in requests]
        top_p = [r.params.top_p for r in requests]
        min_p = [r.params.min_p for r in requests]
        # Which filters run is decided from the host-side params: no device sync for the branch.
        scaled = apply_top_k_top_p_min_p(
            scaled,
            _on_device(top_k, torch.long, device) if min(top_k) < self.vocab_size else None,
            _on_device(top_p, logits.dtype, device) if min(top_p) < 1 else None,
            _on_device(min_p, logits.dtype, device) if max(min_p) > 0 else None,
        )
        probs = torch.softmax(scaled, dim=-1)
        noise = torch.empty_like(probs).exponential_()
        for row, request in enumerate(requests):
            if request.generator is not None:
                noise[row].exponential_(generator=request.generator)
        sampled = probs.div_(noise).argmax(dim=-1)
        return torch.where(_on_device(greedy, torch.bool, device), logits.argmax(dim=-1), sampled)


def apply_top_k_top_p_min_p(
    logits: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None, min_p: torch.Tensor | None
) -> torch.Tensor:
    """Filter each row in vLLM's order: min-p, then top-k, then top-p (always keeping the best token).

    A None filter is off for every row.
    """
    if min_p is not None:
        probs = torch.softmax(logits, dim=-1)
        threshold = probs.max(dim=-1, keepdim=True).values * min_p.unsqueeze(1)
        logits = logits.masked_fill(probs < threshold, _NEG_INF)
    if top_k is None and top_p is None:
        return logits
    vocab = logits.shape[-1]
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    ranks = torch.arange(vocab, device=logits.device).unsqueeze(0)
    if top_k is not None:
        sorted_logits = sorted_logits.masked_fill(ranks >= top_k.unsqueeze(1), _NEG_INF)
    if top_p is not None:
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_logits = sorted_logits.masked_fill((mass_before > top_p.unsqueeze(1)) & (ranks > 0), _NEG_INF)
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)


def _top_logprobs(logprobs: torch.Tensor, token_ids: torch.Tensor, requests: Sequence[Request]) -> _TopLogprobs:
    max_k = max((r.params.logprobs or 0) for r in requests)
    top_values, top_ids = logprobs.topk(max(max_k, 1), dim=-1)
    chosen = logprobs.gather(1, token_ids.unsqueeze(1)).squeeze(1)
    return _TopLogprobs(top_values, top_ids, chosen, [r.params.logprobs for r in requests])


def _host_logprobs(ks: list[int | None], top_values: list[list[float]], top_ids: list[list[int]],
                   chosen: list[float], ids: list[int]) -> list[dict[int, float] | None]:
    result: list[dict[int, float] | None] = []
    for row, k in enumerate(ks):
        if k is None:
            result.append(None)
            continue
        entry = dict(zip(top_ids[row][:k], top_values[row][:k]))
        entry[ids[row]] = chosen[row]
        result.append(entry)
    return result
