"""GGUF weights: config from metadata, dequantization, Q/K un-permutation, and logits against llama.cpp.

The dequantizer is what is checked, so the float32 sources say quantization="none": `auto` would repack the
4-bit matrices for the CPU int4 kernel (tests/gguf/test_gguf_int4_cpu.py checks that path against llama.cpp)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.llama_cpp_ref import reference_scores

from .tiny_gguf import VARIED_TEXT, gguf_name, hf_model

from velollm.engine.loader.gguf_jobs import unpermute_qk
from velollm.engine.loader.resolve import resolve_model

ARCHS = ("llama", "qwen2", "qwen3")
QTYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")
KQUANTS = ("Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K")
# rms(error) / rms(original) of a dequantized matrix, per storage type (quantization noise; a wrong
# row order would give about 1.4)
WEIGHT_TOL = {"F32": 0.0, "F16": 1e-3, "BF16": 5e-3, "Q8_0": 0.01, "Q5_0": 0.05, "Q5_1": 0.05, "Q4_0": 0.1, "Q4_1": 0.1}
# max |logit difference| / std(llama.cpp logits). The reference runs with an f32 KV cache, so what
# remains is how llama.cpp's CPU matmuls round the activations: to f16 / bf16 against F16 / BF16
# weights, and to q8_0 / q8_1 / q8_K blocks against quantized weights. Ours multiply float32
# activations by the exactly dequantized weights. Measured on these fixtures: F32 < 4e-6,
# F16 < 3e-3, BF16 < 0.02, quantized < 0.08 (a wrong block layout or row order gives > 1).
LOGIT_TOL = {"F32": 1e-4, "F16": 0.006, "BF16": 0.04, "Q8_0": 0.12, "Q5_0": 0.12, "Q5_1": 0.12, "Q4_0": 0.12,
             "Q4_1": 0.12, "K": 0.12}


def _reference_tensors(path, config) -> dict[str, torch.Tensor]:
    """gguf.GGUFReader + gguf.quants.dequantize + transformers' reverse permutation, independently of us."""
    import gguf

    out = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        data = torch.from_numpy(np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32))
        data = data.reshape(tuple(reversed(t.shape.tolist())))
        if config.model_type == "llama" and (".attn_q." in t.name or ".attn_k." in t.name):
            heads = config.num_attention_heads if ".attn_q." in t.name else config.num_key_value_heads
            dim = data.shape[0] // heads // 2
            data = data.reshape(heads, dim, 2, *data.shape[1:]).swapaxes(2, 1).reshape(data.shape)
        out[t.name] = data
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_config_from_metadata(fixtures, arch):
    fx = fixtures.model(arch)
    c = resolve_model(str(fx.path), dtype="float32", quantization="none").config
    s = fx.spec
    assert (c.model_type, c.hidden_size, c.num_hidden_layers, c.intermediate_size) == (arch, s.hidden, s.layers, s.intermediate)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (s.heads, s.kv_heads, s.head_dim)
    assert c.vocab_size == len(fx.tok.tokens) and c.max_position_embeddings == s.context
    assert c.rope_theta == s.rope_theta and c.rms_norm_eps == pytest.approx(s.eps)
    assert c.tie_word_embeddings == s.tied and c.attention_bias == (arch == "qwen2") and c.qk_norm == (arch == "qwen3")
    assert (c.rope_scaling is not None) == s.llama3_rope
    if s.llama3_rope:
        assert (c.rope_scaling.rope_type, c.rope_scaling.factor) == ("llama3", 8.0)
    assert c.bos_token_id == fx.tok.bos and fx.tok.eos in c.eos_token_ids


@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("arch", ARCHS)
def test_dequantized_tensors(fixtures, arch, qtype):
    fx = fixtures.model(arch, qtype)
    source = resolve_model(str(fx.path), dtype="float32", quantization="none")
    ours = dict(source.iter_weights())
    assert set(ours) == set(fx.sd)  # tied qwen2 has no lm_head.weight in the file nor in the stream
    reference = _reference_tensors(fx.path, source.config)
    for name, original in fx.sd.items():
        assert ours[name].dtype == torch.float32 and ours[name].shape == original.shape, name
        assert torch.equal(ours[name], reference[gguf_name(name)]), name
        # Against the HF weights the file was made from: only quantization noise, so the Q/K rows
        # are back in Hugging Face order (a wrong permutation would be off by the weights' scale).
        tol = WEIGHT_TOL[qtype] if original.ndim == 2 else 0.0
        assert (ours[name] - original).norm() <= tol * original.norm(), name
    assert source.info.quantization_level == qtype


def test_qk_rows_are_unpermuted(fixtures):
    import gguf

    fx = fixtures.model("llama")
    raw = {t.name: t.data for t in gguf.GGUFReader(str(fx.path)).tensors}
    ours = dict(resolve_model(str(fx.path), dtype="float32", quantization="none").iter_weights())
    q, k = fx.sd["model.layers.0.self_attn.q_proj.weight"], fx.sd["model.layers.0.self_attn.k_proj.weight"]
    assert not np.array_equal(raw["blk.0.attn_q.weight"], q.numpy())  # the file holds llama.cpp's order
    assert torch.equal(ours["model.layers.0.self_attn.q_proj.weight"], q)
    assert torch.equal(ours["model.layers.0.self_attn.k_proj.weight"], k)
    assert torch.equal(unpermute_qk(torch.from_numpy(raw["blk.0.attn_k.weight"].copy()), fx.spec.kv_heads), k)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_compute_dtype(fixtures, dtype):
    fx = fixtures.model("qwen3", "Q8_0")
    weights = dict(resolve_model(str(fx.path), dtype=dtype).iter_weights())
    assert {t.dtype for t in weights.values()} == {getattr(torch, dtype)}


def _logits_vs_llama_cpp(path, qtype_tol):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    source = resolve_model(str(path), dtype="float32", quantization="none")
    model = hf_model(source.config, dict(source.iter_weights()))
    ids = source.load_tokenizer().encode(VARIED_TEXT)[:64]
    with torch.no_grad():
        ours = model(torch.tensor([ids])).logits[0].numpy()
    theirs, _ = reference_scores(path, ids, n_ctx=128)
    scale = theirs.std()
    assert np.abs(ours - theirs).max() <= qtype_tol * scale
    # Greedy picks agree wherever llama.cpp's top-2 gap is larger than the tolerance.
    top2 = np.sort(theirs, axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > qtype_tol * scale
    assert (ours.argmax(-1) == theirs.argmax(-1))[clear].all()


@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_llama_cpp(fixtures, arch, qtype):
    _logits_vs_llama_cpp(fixtures.model(arch, qtype).path, LOGIT_TOL[qtype])


@pytest.mark.parametrize("ftype", KQUANTS)
@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_kquants_from_llama_cpp_quantizer(fixtures, arch, ftype):
    path = fixtures.kquant(arch, ftype)
    source = resolve_model(str(path), dtype="float32", quantization="none")
    ours = dict(source.iter_weights())
    reference = _reference_tensors(path, source.config)
    for name, tensor in ours.items():
        assert torch.equal(tensor, reference[gguf_name(name)]), name
    assert source.info.quantization_level == ftype
    _logits_vs_llama_cpp(path, LOGIT_TOL["K"])


def test_kquant_types_covered(fixtures):
    from velollm.engine.loader.gguf_file import GGUFFile

    seen = set()
    for ftype in KQUANTS:
        with GGUFFile(fixtures.kquant("llama", ftype)) as f:
            seen |= {t.type_name for t in f.tensors.values()}
    assert {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"} <= seen
