"""GGUF weights kept quantized (`quantization="gguf"`) against the dequantize-at-load path.

On the CPU a quantized layer runs the torch reference: the bit-exact dequantization of its planes for
the call, then a float32 matmul; the dequantized path multiplies the same float32 weights, so only the
summation order of the matmul may differ (a few float32 ulps on logits a few nats wide): greedy tokens
must be identical and logprobs within 1e-4. One test runs the Triton kernels (interpreted) inside the
model, as CUDA would: GEMM prefill, GEMV decode, quantized embedding rows and fused projections of
mixed types. llama.cpp parity of the quantized path is in test_gguf_generate.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from velollm import LLM, SamplingParams
from velollm.engine.loader.gguf import MIN_KV_TOKENS, gguf_source
from velollm.engine.loader.gguf_file import GGUFFile
from velollm.engine.loader.gguf_quantized import resident_weight_bytes, resolve_quantization, stays_quantized
from velollm.engine.models import quantized_linear
from velollm.kernels import int4_cpu
from velollm.errors import UnsupportedModel

# every GGUF type the kernels compute on appears in at least one of these files
CASES = [("llama", "Q4_K_M"), ("llama", "Q2_K"), ("llama", "Q3_K_M"), ("llama", "Q5_K_M"), ("qwen2", "Q4_0"),
         ("qwen2", "Q5_1"), ("qwen3", "Q8_0"), ("qwen3", "Q4_1"), ("qwen3", "Q5_0")]
PROMPT = "Hello world! def f(x):\n    return x"


def model_path(fixtures, arch: str, qtype: str):
    return fixtures.kquant(arch, qtype) if "_K" in qtype else fixtures.model(arch, qtype).path


def generate(path, quantization: str, max_tokens: int = 12, device: str = "cpu", logprobs: int = 1):
    llm = LLM(model=str(path), dtype="float32", device=device, kv_cache_memory=16 * 2**20, quantization=quantization)
    prompt = llm.get_tokenizer().encode(PROMPT)
    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=max_tokens, logprobs=logprobs,
                                                ignore_eos=True))[0]
    runner = llm.engine.runner
    llm.close()
    return out, runner


def quantized_types(model: torch.nn.Module) -> set[str]:
    types = set()
    for module in model.modules():
        if isinstance(module, quantized_linear.QuantizedLinear):
            types |= {w.qtype for _, w in module.parts if hasattr(w, "qtype")}
    return types


def file_types(path) -> set[str]:
    with GGUFFile(path) as f:
        return {t.type_name for t in f.tensors.values() if stays_quantized(t)}


def assert_same_generation(ours, theirs, tol: float = 1e-4) -> None:
    assert ours.token_ids == theirs.token_ids
    for step, token in enumerate(ours.token_ids):
        assert ours.logprobs[step][token] == pytest.approx(theirs.logprobs[step][token], abs=tol)


@pytest.mark.parametrize("arch, qtype", CASES)
def test_quantized_path_generates_what_the_dequantized_path_does(fixtures, arch, qtype):
    path = model_path(fixtures, arch, qtype)
    quantized, runner = generate(path, "gguf")
    dequantized, dense_runner = generate(path, "none")
    assert_same_generation(quantized, dequantized)
    # the layers really held the file's blocks (the embedding included), at the file's size
    assert runner.quantization == "gguf" and dense_runner.quantization == "none"
    assert quantized_types(runner.model) | {runner.model.model.embed_tokens.weight.qtype} == file_types(path)
    with GGUFFile(path) as f:
        quantized_bytes = sum(t.nbytes for t in f.tensors.values() if stays_quantized(t))
    planes = sum(m.weight_bytes() for m in runner.model.modules() if isinstance(m, quantized_linear.QUANTIZED_MODULES))
    assert planes == quantized_bytes
    assert runner.weight_bytes < dense_runner.weight_bytes
    # the resident size gguf_source predicted (memory check, `velollm fits`) is what was loaded, less
    # the rope table the runner adds
    rope = sum(b.numel() * b.element_size() for b in runner.model.buffers())
    assert gguf_source(path, dtype="float32", device="cpu", quantization="gguf").weight_bytes == runner.weight_bytes - rope
    assert "GGUF quantized" in runner.paths()["matmul"]


def test_triton_kernels_inside_the_model(fixtures, monkeypatch):
    """The Q4_K_M fixture mixes Q4_K and Q6_K (layer 1's v_proj and down_proj): the fused q/k/v is two
    launches into one output. Interpreted, so a short generation."""
    from velollm import kernels
    from velollm.kernels import quant_rows

    path = model_path(fixtures, "llama", "Q4_K_M")
    dequantized, _ = generate(path, "none", max_tokens=3)
    calls = {"gemv": 0, "gemm": 0}

    def count(kernel, name):
        def run(*args, **kwargs):
            calls[name] += 1
            return kernel(*args, **kwargs)
        return run

    monkeypatch.setattr(kernels.quant_gemv, "quant_gemv_triton", count(kernels.quant_gemv.quant_gemv_triton, "gemv"))
    monkeypatch.setattr(kernels.quant_gemm, "quant_gemm_triton", count(kernels.quant_gemm.quant_gemm_triton, "gemm"))
    monkeypatch.setattr(quantized_linear, "kernels", SimpleNamespace(
        quantized_linear=kernels.quantized_linear_triton, quantized_embedding=quant_rows.dequantize_rows_triton))
    quantized, runner = generate(path, "gguf", max_tokens=3)
    assert calls["gemm"] > 0 and calls["gemv"] > 0  # the prompt through the GEMM, decode steps through the GEMV
    layer = runner.model.model.layers[1].self_attn.qkv_proj
    assert [w.qtype for _, w in layer.parts] == ["Q4_K", "Q6_K"]
    # float32 kernels with the reference's weights: only summation order differs (float32 ulps)
    assert_same_generation(quantized, dequantized, tol=1e-3)


def test_memory_check_counts_the_quantized_size(fixtures, monkeypatch):
    """A model that fits only quantized loads quantized and is refused dequantized."""
    import psutil

    path = model_path(fixtures, "llama", "Q4_K_M")
    with GGUFFile(path) as f:
        infos = [t for t in f.tensors.values() if t.name != "rope_freqs.weight"]
    quantized, dense = resident_weight_bytes(infos, "gguf", 4), resident_weight_bytes(infos, "none", 4)
    assert quantized < dense / 4
    spec = fixtures.model("llama").spec
    kv = 2 * spec.layers * spec.kv_heads * spec.head_dim * 4 * MIN_KV_TOKENS  # the minimal float32 KV cache
    available = (quantized + dense) // 2 + kv
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=available))
    assert gguf_source(path, dtype="float32", device="cpu", quantization="gguf").quantization == "gguf"
    with pytest.raises(UnsupportedModel, match="dequantized to float32"):
        gguf_source(path, dtype="float32", device="cpu", quantization="none")


def test_resolve_quantization():
    from velollm.kernels import HAS_TRITON

    for dtype in ("float32", "bfloat16"):  # the 4-bit matrices as torch's CPU int4, the rest dequantized at load
        assert resolve_quantization("auto", "cpu", dtype) == ("int4" if int4_cpu.available() else "none")
    assert resolve_quantization("auto", "cpu", "float16") == "none"
    assert resolve_quantization(None, "cuda:0") == ("gguf" if HAS_TRITON else "none")
    assert resolve_quantization("none", "cuda") == "none"
    assert resolve_quantization("gguf", "cpu") == "gguf"
    with pytest.raises(ValueError, match="quantization must be one of"):
        resolve_quantization("int4", "cpu")
