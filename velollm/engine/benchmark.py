"""How fast one model runs on this machine: batch-1 decode against the memory-bandwidth roofline, and
offline throughput with many requests at once. What `velollm benchmark` prints.

Prompts are seeded random token ids (distinct per request, so no prefix-cache hits) and every request
generates exactly `output_len` tokens (EOS ignored): the figures measure the engine, not the text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from velollm.engine.llm_engine import LLMEngine
from velollm.hw.bandwidth import copy_bandwidth
from velollm.sampling_params import SamplingParams


@dataclass(frozen=True)
class DecodeResult:
    """One request alone: first-token latency and the decode rate after it."""

    prompt_tokens: int
    output_tokens: int
    ttft_s: float
    decode_tok_s: float
    roofline_tok_s: float  # copy bandwidth / weight bytes: every decode step reads every weight once

    @property
    def fraction_of_roofline(self) -> float:
        return self.decode_tok_s / self.roofline_tok_s


@dataclass(frozen=True)
class ThroughputResult:
    """`num_requests` requests submitted at once, run to completion."""

    num_requests: int
    prompt_tokens: int
    output_tokens: int
    seconds: float

    @property
    def output_tok_s(self) -> float:
        return self.output_tokens / self.seconds

    @property
    def total_tok_s(self) -> float:
        return (self.prompt_tokens + self.output_tokens) / self.seconds


@dataclass(frozen=True)
class BenchmarkResult:
    device: str
    hardware: str
    dtype: str
    weight_bytes: int
    copy_bytes_per_s: float
    decode: DecodeResult
    throughput: ThroughputResult


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weights, tied ones counted once (what one decode step reads)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def random_prompts(num: int, length: int, vocab_size: int, seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab_size, (length,), generator=gen).tolist() for _ in range(num)]


def run_benchmark(engine: LLMEngine, *, num_requests: int, input_len: int, output_len: int) -> BenchmarkResult:
    """Warm-up, then batch-1 decode, then the throughput run, on an engine with no other requests."""
    if engine.has_unfinished_requests():
        raise RuntimeError("the engine is busy: benchmark an idle engine")
    if input_len + output_len > engine.max_model_len:
        raise ValueError(f"input_len + output_len ({input_len + output_len}) exceeds the context "
                         f"({engine.max_model_len}); lower them or raise --max-model-len")
    device = engine.device
    vocab = min(engine.model_config.vocab_size, engine.tokenizer.vocab_size)
    bandwidth = copy_bandwidth(device)
    weights = weight_bytes(engine.runner.model)
    params = SamplingParams(temperature=0, max_tokens=output_len, ignore_eos=True, output_kind="final_only")
    # Warm-up (kernel compiles, allocator): prompts never used again, so nothing is cached for later.
    _run(engine, random_prompts(2, input_len, vocab, seed=1), SamplingParams(temperature=0, max_tokens=4,
                                                                             ignore_eos=True))
    decode = _decode(engine, random_prompts(1, input_len, vocab, seed=2)[0], params, bandwidth / weights)
    prompts = random_prompts(num_requests, input_len, vocab, seed=3)
    start = time.perf_counter()
    generated = _run(engine, prompts, params)
    seconds = time.perf_counter() - start
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return BenchmarkResult(
        device=str(device), hardware=hardware, dtype=engine.model_config.dtype, weight_bytes=weights,
        copy_bytes_per_s=bandwidth, decode=decode,
        throughput=ThroughputResult(num_requests, num_requests * input_len, generated, seconds))


def _decode(engine: LLMEngine, prompt: list[int], params: SamplingParams, roofline: float) -> DecodeResult:
    """Each engine step ends in the sampler's host read of the new token, so host clocks are honest."""
    start = time.perf_counter()
    engine.add_request(prompt, params)
    first = None
    num_tokens = 0
    while engine.has_unfinished_requests():
        for delta in engine.step():
            num_tokens += len(delta.token_ids)
            if first is None and delta.token_ids:
                first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None
    rate = (num_tokens - 1) / (end - first) if num_tokens > 1 and end > first else 0.0
    return DecodeResult(len(prompt), num_tokens, first - start, rate, roofline)


def _run(engine: LLMEngine, prompts: list[list[int]], params: SamplingParams) -> int:
    for prompt in prompts:
        engine.add_request(prompt, params)
    num_tokens = 0
    while engine.has_unfinished_requests():
        num_tokens += sum(len(delta.token_ids) for delta in engine.step())
    return num_tokens
