"""Shared helpers for the engine tests: run requests to completion, HF reference logits."""

from __future__ import annotations

from pathlib import Path

import torch

from velollm.config import EngineConfig
from velollm.engine.llm_engine import LLMEngine
from velollm.engine.loader.hf_folder import load_hf_folder
from velollm.outputs import RequestOutput
from velollm.sampling_params import SamplingParams


def make_engine(folder: Path, **kwargs) -> LLMEngine:
    """`kwargs`: EngineConfig fields (CPU, float32 and a 32 MiB KV cache unless given)."""
    kwargs = {"device": "cpu", "dtype": "float32", "kv_cache_memory": 32 << 20, **kwargs}
    return LLMEngine(load_hf_folder(folder), EngineConfig(**kwargs))


def run_all(engine: LLMEngine, prompts: list[list[int]],
            params: SamplingParams | list[SamplingParams]) -> list[RequestOutput]:
    """Every prompt through the engine to the end (`params` one for all, or one per prompt)."""
    per_prompt = params if isinstance(params, list) else [params] * len(prompts)
    outputs = {}
    for prompt, sp in zip(prompts, per_prompt, strict=True):
        request = engine.add_request(prompt, sp)
        outputs[request.request_id] = RequestOutput(request.request_id, prompt)
    while engine.has_unfinished_requests():
        for delta in engine.step():
            outputs[delta.request_id].add(delta)
    return list(outputs.values())


def greedy(max_tokens: int = 32, **kwargs) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, **kwargs)


def random_prompts(lengths: list[int], seed: int = 0, vocab: int = 300) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in lengths]


def joined(prompt: list[int], deltas: list) -> RequestOutput:
    """One request's streamed deltas (AsyncEngine.generate) as its RequestOutput."""
    out = RequestOutput(deltas[0].request_id if deltas else "", prompt)
    for delta in deltas:
        out.add(delta)
    return out
