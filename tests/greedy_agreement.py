"""Greedy outputs compared the way two float computations allow: token for token until they part at a near tie.

Two runs of one model in float32 (engine against transformers, batched against solo, cached prefix against
uncached) sum in different orders, and which order depends on the CPU's kernels (torch dispatches AVX2, AVX-512
or scalar code: ATEN_CPU_CAPABILITY=default shows another order on this machine). Where the reference's top two
tokens lie closer than that noise, either may come out; from there the continuations differ. So a divergence is
accepted only where the reference put our token within `near_tie` nats of its own, the comparison stops there, and
every logprob before it agrees within `near_tie`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import torch

# float32 logprobs of one model by different kernels differ by about 1e-5 nats on the tiny test models; 1e-3 is the
# engine tests' logprob tolerance against transformers. Their greedy runs meet top-two gaps down to 0.0009 nats
# (test_batch_invariance's prompts) and 0.003-0.03 (test_greedy_equals_transformers_generate): near enough to
# a tie that another CPU's summation order is not ruled out, far enough that 1e-3 still catches a wrong kernel.
FLOAT32_NEAR_TIE = 1e-3


def assert_greedy_agrees(ours: Sequence[Hashable], ours_logprobs: Sequence[Mapping[Hashable, float]] | None,
                         ref: Sequence[Hashable], ref_logprobs: Sequence[Mapping[Hashable, float]],
                         near_tie: float = FLOAT32_NEAR_TIE, what: str = "the reference") -> int:
    """`*_logprobs[i]`: a dict token id -> logprob at step i (the reference's must hold its top two: logprobs >= 2);
    `ours_logprobs` None: tokens only. Returns the number of steps that agree."""
    assert len(ours) == len(ref), f"{len(ours)} tokens against {len(ref)} from {what}"
    for step, (a, b) in enumerate(zip(ours, ref, strict=True)):
        row = ref_logprobs[step]
        if a != b:
            theirs = float(row[a]) if a in row else -math.inf
            gap = float(row[b]) - theirs
            assert gap <= near_tie, f"step {step}: we chose {a}, {what} {b}, {gap:.3g} nats apart in its logprobs"
            return step
        if ours_logprobs is not None:
            got, want = ours_logprobs[step][a], float(row[b])
            assert abs(got - want) <= near_tie, f"step {step}: logprob {got:.6f}, {what} {want:.6f}"
    return len(ours)


def assert_all_greedy_agree(ours: Sequence, ref: Sequence, near_tie: float = FLOAT32_NEAR_TIE,
                            what: str = "the reference") -> None:
    """RequestOutputs pairwise, both run with logprobs >= 2."""
    assert len(ours) == len(ref)
    for i, (o, r) in enumerate(zip(ours, ref, strict=True)):
        assert_greedy_agrees(o.token_ids, o.logprobs, r.token_ids, r.logprobs, near_tie, f"{what} (request {i})")


def top_logprobs(logits: Sequence[torch.Tensor], k: int = 5) -> list[dict[int, float]]:
    """A reference's logits per step (transformers' generate(output_logits=True): rows [1, vocab]) as the
    engine's logprobs: token id -> logprob for the top k."""
    tops = [torch.log_softmax(row.reshape(-1).float(), -1).topk(k) for row in logits]
    return [dict(zip(t.indices.tolist(), t.values.tolist(), strict=True)) for t in tops]
