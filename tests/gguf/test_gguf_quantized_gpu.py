"""GPU-only: GGUF weights kept quantized on CUDA (Triton GEMV/GEMM, CUDA graphs) against the dequantized path.

float32 activations on both sides (the kernels' dots run in IEEE float32): the weights are the same
values, only summation orders differ, so greedy tokens agree except at near-ties, where the comparison
stops (the margin is reported), and logprobs agree within 1e-3.
"""

from __future__ import annotations

import pytest
import torch

from .test_gguf_quantized import CASES, model_path, generate

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
NEAR_TIE = 1e-3


@pytest.mark.parametrize("arch, qtype", CASES)
def test_cuda_quantized_path_matches_dequantized(fixtures, arch, qtype):
    pytest.importorskip("triton")
    path = model_path(fixtures, arch, qtype)
    quantized, runner = generate(path, "gguf", device="cuda", logprobs=2)
    dequantized, _ = generate(path, "none", device="cuda", logprobs=2)
    paths = runner.paths()
    assert paths["matmul"] == "GGUF quantized (Triton GEMV/GEMM)"
    assert paths["steps"]["decode_graph"] > 0  # batch-1 decode replays a graph with quantized layers inside
    for step, (ours, ref) in enumerate(zip(quantized.token_ids, dequantized.token_ids)):
        if ours != ref:
            gap = dequantized.logprobs[step][ref] - dequantized.logprobs[step].get(ours, -1e9)
            assert gap <= NEAR_TIE, f"step {step}: {ours} vs {ref}, {gap:.2e} apart"
            break
        assert quantized.logprobs[step][ours] == pytest.approx(dequantized.logprobs[step][ref], abs=1e-3)
