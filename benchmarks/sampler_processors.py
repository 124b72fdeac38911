"""Host time of the sampler's logits processors per decode step: allowed_token_ids, logit_bias, min_tokens,
and the repetition / presence / frequency penalties.

    python benchmarks/sampler_processors.py [--rows 16] [--vocab 151936] [--allowed 20000] [--bias 300]
                                            [--prompt 4000] [--output 500]

Each row of the batch is its own request (as in the engine); `Sampler.process` runs on fresh logits for
`--steps` steps and the time of copying the logits is subtracted. The request's tensors are built at its first
step and reused (sampler.RequestTensors), so the first step is shown apart from the steady ones. The penalty
cases decode: each row holds `--prompt` prompt tokens and `--output` output tokens, and every step appends one
sampled token to each row, as the engine does between steps. CPU, one thread. Prints one JSON row per case.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_util import emit
from velollm.engine.request import Request
from velollm.engine.sampler import Sampler
from velollm.sampling_params import SamplingParams


def _ms_per_step(sampler: Sampler, params: SamplingParams, rows: int, vocab: int, steps: int) -> tuple[float, float]:
    requests = [Request(str(i), [1, 2, 3], params) for i in range(rows)]
    logits = torch.randn(rows, vocab)
    start = time.perf_counter()
    sampler.process(logits.clone(), requests)
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(steps):
            sampler.process(logits.clone(), requests)
        best = min(best, (time.perf_counter() - start) / steps)
    start = time.perf_counter()
    for _ in range(steps):
        logits.clone()
    clone = (time.perf_counter() - start) / steps
    return 1e3 * (first - clone), 1e3 * (best - clone)


def _penalty_ms_per_step(sampler: Sampler, params: SamplingParams, rows: int, vocab: int, steps: int,
                         num_prompt: int, num_output: int) -> tuple[float, float]:
    rng = random.Random(1)
    requests = [Request(str(i), [rng.randrange(vocab) for _ in range(num_prompt)], params,
                        output_token_ids=[rng.randrange(vocab) for _ in range(num_output)]) for i in range(rows)]
    logits = torch.randn(rows, vocab)
    start = time.perf_counter()
    sampler.process(logits.clone(), requests)
    first = time.perf_counter() - start
    elapsed = 0.0
    for _ in range(steps):
        for r in requests:  # the engine appends each row's sampled token between steps
            r.output_token_ids.append(rng.randrange(vocab))
        start = time.perf_counter()
        sampler.process(logits.clone(), requests)
        elapsed += time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        logits.clone()
    clone = (time.perf_counter() - start) / steps
    return 1e3 * (first - clone), 1e3 * (elapsed / steps - clone)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--allowed", type=int, default=20000)
    p.add_argument("--bias", type=int, default=300)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--prompt", type=int, default=4000, help="prompt tokens per row (penalty cases)")
    p.add_argument("--output", type=int, default=500, help="output tokens per row at the first step (penalty cases)")
    args = p.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(0)
    allowed = rng.sample(range(args.vocab), args.allowed)
    bias = {i: 5.0 for i in rng.sample(range(args.vocab), args.bias)}
    cases = {
        "allowed_token_ids": SamplingParams(allowed_token_ids=allowed),
        "logit_bias": SamplingParams(logit_bias=bias),
        "both+min_tokens": SamplingParams(allowed_token_ids=allowed, logit_bias=bias, min_tokens=5, max_tokens=20,
                                          stop_token_ids=[7]),
    }
    sampler = Sampler(args.vocab, frozenset({args.vocab - 1}))
    for name, params in cases.items():
        first, steady = _ms_per_step(sampler, params, args.rows, args.vocab, args.steps)
        emit(what="sampler_processors", case=name, rows=args.rows, vocab=args.vocab, allowed=args.allowed,
             bias=args.bias, first_step_ms=round(first, 3), step_ms=round(steady, 3))
    penalties = {
        "repetition_penalty": SamplingParams(repetition_penalty=1.1),
        "repetition_penalty+window64": SamplingParams(repetition_penalty=1.1, repetition_window=64),
        "presence+frequency": SamplingParams(presence_penalty=0.5, frequency_penalty=0.3),
        "all_penalties": SamplingParams(repetition_penalty=1.1, presence_penalty=0.5, frequency_penalty=0.3),
    }
    for name, params in penalties.items():
        first, steady = _penalty_ms_per_step(sampler, params, args.rows, args.vocab, args.steps, args.prompt,
                                             args.output)
        emit(what="sampler_processors", case=name, rows=args.rows, vocab=args.vocab, prompt=args.prompt,
             output=args.output, first_step_ms=round(first, 3), step_ms=round(steady, 3))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
