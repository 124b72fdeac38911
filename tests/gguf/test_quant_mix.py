"""velollm.engine.loader.quant_mix: Ollama's tensor-type rule where the llama.cpp comparison
(test_gguf_requantize.py) does not reach: 16 layers (benchmarks/quantize.py compares those with llama.cpp at
full size), MoE and MLA tensors, Qwen3-Next's table, and rows no block fits."""

from __future__ import annotations

import pytest

from velollm.engine.loader.quant_mix import TensorSpec, is_quantized, tensor_types, use_more_bits


def _model(layers: int, hidden: int = 2048, down: int = 8192, tied: bool = False, extra: tuple[str, ...] = ()):
    specs = [TensorSpec("token_embd.weight", (hidden, 1000), "F16"), TensorSpec("output_norm.weight", (hidden,), "F32")]
    if not tied:
        specs.append(TensorSpec("output.weight", (hidden, 1000), "F16"))
    for i in range(layers):
        for part in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", *extra):
            shape = (hidden,) if part.endswith("norm") else (hidden, hidden)
            specs.append(TensorSpec(f"blk.{i}.{part}.weight", shape, "F32" if len(shape) == 1 else "F16"))
        specs.append(TensorSpec(f"blk.{i}.ffn_down.weight", (down, hidden), "F16"))
    return specs


def _kinds(specs, level, arch="llama", experts=0):
    return dict(zip((s.name for s in specs), tensor_types(specs, level, arch, experts)))


def test_sixteen_layers_in_file_order():
    """Llama-3.2-1B's 16 layers: use_more_bits picks layers 0, 1, 4, 7, 10, 13, 14, 15, counted in file order."""
    kinds = _kinds(_model(16, tied=True), "Q4_K_M")
    q6 = [i for i in range(16) if kinds[f"blk.{i}.attn_v.weight"] == "Q6_K"]
    assert q6 == [i for i in range(16) if use_more_bits(i, 16)] == [0, 1, 4, 7, 10, 13, 14, 15]
    assert [i for i in range(16) if kinds[f"blk.{i}.ffn_down.weight"] == "Q6_K"] == q6
    assert kinds["token_embd.weight"] == "Q6_K"  # tied: the output layer
    assert kinds["output_norm.weight"] == "F32" and kinds["blk.3.attn_q.weight"] == "Q4_K"
    small = _kinds(_model(16, tied=True), "Q4_K_S")
    assert [i for i in range(16) if small[f"blk.{i}.attn_v.weight"] == "Q5_K"] == [0, 1, 2, 3]
    assert [i for i in range(16) if small[f"blk.{i}.ffn_down.weight"] == "Q5_K"] == [0, 1]
    assert set(_kinds(_model(16), "Q8_0").values()) == {"Q8_0", "F32"}


def test_untied_embedding_stays_at_the_level():
    kinds = _kinds(_model(2), "Q4_K_M")
    assert (kinds["token_embd.weight"], kinds["output.weight"]) == ("Q4_K", "Q6_K")


def test_fused_qkv_moe_and_mla():
    kinds = _kinds(_model(8, extra=("attn_qkv", "attn_q_a", "ffn_gate_inp")), "Q4_K_M", experts=8)
    assert kinds["blk.2.attn_qkv.weight"] == "Q5_K" and kinds["blk.2.attn_q_a.weight"] == "Q8_0"
    assert kinds["blk.2.attn_v.weight"] == kinds["blk.2.attn_k.weight"] == "Q8_0"  # 8 experts
    assert kinds["blk.2.attn_output.weight"] == "Q5_K" and kinds["blk.2.ffn_gate_inp.weight"] == "F16"


def test_qwen3_next_linear_attention_table():
    specs = [TensorSpec("blk.0.ssm_out.weight", (256, 256), "BF16"), TensorSpec("blk.0.attn_v.weight", (256, 256), "BF16")]
    assert tensor_types(specs, "Q4_K_S", "qwen3next") == ["Q4_K", "Q6_K"]
    assert tensor_types(specs, "Q8_0", "qwen3next") == ["Q8_0", "Q8_0"]


def test_rows_no_block_fits():
    specs = [TensorSpec("output.weight", (100, 10), "F32"), TensorSpec("blk.0.attn_q.weight", (96, 96), "F16"),
             TensorSpec("blk.0.attn_k.weight", (80, 96), "F16")]
    assert tensor_types(specs, "Q4_K_M", "llama") == ["F16", "Q5_0", "F16"]  # output: Q8_0 -> F16 (Ollama's)


def test_what_is_never_quantized():
    for name in ("blk.0.attn_norm.weight", "position_embd.weight", "v.blk.0.attn_q.weight", "mm.0.weight",
                 "blk.0.ssm_conv1d.weight", "blk.0.attn_q.bias", "per_layer_token_embd.weight"):
        assert not is_quantized(name, 2), name
    assert not is_quantized("blk.0.attn_q.weight", 1) and is_quantized("blk.0.ffn_down_exps.weight", 3)
    with pytest.raises(ValueError, match="unsupported quantization type Q4_0"):
        tensor_types([], "Q4_0", "llama")
