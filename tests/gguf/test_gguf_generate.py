"""Greedy generation from GGUF files through VeloLLM's engine equals llama.cpp's, token for token.

Tolerance: a divergence is accepted only at a near-tie, where llama.cpp's own logits put the token
we picked within NEAR_TIE of the one it picked, and the comparison stops there (the continuations
differ from then on). llama.cpp runs with an f32 KV cache here, but its CPU matmuls round the
activations to f16 against F16 weights and to q8 blocks (q8_K for K-quants) against quantized
weights, while VeloLLM multiplies float32 activations by the exactly dequantized weights. On these
fixtures (logits about 3 nats wide) that moves a logit by < 1e-5 (F32), < 0.01 (F16) and < 0.25
(quantized), which sets NEAR_TIE and the logprob tolerance. Quantized files run twice: dequantized
at load, and kept quantized (quantization="gguf": the quantized layers' CPU path), against one
llama.cpp run.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from tests.llama_cpp_ref import reference_scores

NEAR_TIE = {"F32": 0.001, "F16": 0.02, "Q8_0": 0.4, "Q4_0": 0.4, "Q4_K_M": 0.4, "Q6_K": 0.4}
CASES = [("llama", "F32", "none"), ("llama", "Q8_0", "none"), ("llama", "Q8_0", "gguf"), ("llama", "Q4_K_M", "none"),
         ("llama", "Q4_K_M", "gguf"), ("qwen2", "F16", "none"), ("qwen2", "Q4_0", "none"), ("qwen2", "Q4_0", "gguf"),
         ("qwen3", "F32", "none"), ("qwen3", "Q6_K", "none"), ("qwen3", "Q6_K", "gguf")]
MAX_TOKENS = 16


def _llm_class():
    from velollm import LLM, SamplingParams

    return LLM, SamplingParams


@functools.cache
def _llama_cpp_greedy(path, prompt: tuple[int, ...]) -> tuple[list[int], list[np.ndarray]]:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    scores, tokens = reference_scores(path, list(prompt), n_ctx=256, greedy_steps=MAX_TOKENS)
    return tokens, list(scores[len(prompt) - 1 : len(prompt) - 1 + MAX_TOKENS])


@pytest.mark.parametrize("arch, qtype, quantization", CASES)
def test_greedy_matches_llama_cpp(fixtures, arch, qtype, quantization):
    LLM, SamplingParams = _llm_class()
    path = fixtures.kquant(arch, qtype) if "_K" in qtype else fixtures.model(arch, qtype).path
    llm = LLM(model=str(path), dtype="float32", device="cpu", kv_cache_memory=32 * 2**20, quantization=quantization)
    prompt = llm.get_tokenizer().encode("Hello world! def f(x):\n    return x")
    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=MAX_TOKENS, logprobs=1,
                                                ignore_eos=True))[0]
    theirs, logits = _llama_cpp_greedy(path, tuple(prompt))
    tol = NEAR_TIE[qtype]
    assert len(out.token_ids) == MAX_TOKENS
    for step, (ours, ref, row) in enumerate(zip(out.token_ids, theirs, logits)):
        log_probs = row - np.logaddexp.reduce(row)
        if ours != ref:
            gap = row[ref] - row[ours]
            assert gap <= tol, f"step {step}: we chose {ours}, llama.cpp {ref}, {gap:.3f} apart in its logits"
            break
        assert out.logprobs[step][ours] == pytest.approx(log_probs[ours], abs=tol)
