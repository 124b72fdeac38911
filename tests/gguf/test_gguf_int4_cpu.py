"""The CPU int4 path: Q4_0 / Q4_1 / Q4_K matrices repacked for torch's CPU int4 kernel (velollm.kernels.int4_cpu),
what `--quantization auto` takes for a bfloat16 or float32 model on the CPU.

Per layer: int4_linear against x @ W^T with the bit-exact dequantized W (gguf_dequant) in float32, within
int4_cpu.error_bound: bfloat16 rounding of each group's scale and zero and of the activations (2^-8 relative
each) over sum_k |x_k| (|q - 8| |scale| + |zero|), plus the bfloat16 result; on random blocks the errors seen
are about a tenth of it, so the bound is tight enough to catch a wrong scale, zero or element order (those
are off by whole quanta).
End to end (bfloat16 and float32 models): greedy tokens equal the dequantized path's of the same dtype; in
bfloat16 both round (its weights, our scales) and differ only there, in float32 ours rounds the scales and the
activations going into the kernel; so where they part the dequantized path's logprobs must put the two tokens
within NEAR_TIE. Against llama.cpp the rule of test_gguf_generate.py, with its quantized tolerance widened for
the bfloat16 residual stream.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from velollm import LLM, SamplingParams
from velollm.engine.loader.gguf import gguf_source
from velollm.engine.loader.gguf_file import GGUFFile
from velollm.engine.loader.gguf_quantized import resident_weight_bytes, resolve_quantization, stays_int4
from velollm.engine.models.quantized_linear import QuantizedLinear, quantize_linears
from velollm.hw import cpu_features
from velollm.kernels import gguf_dequant, int4_cpu, int4_unpack
from velollm.kernels.int4_cpu import Int4Weight

pytestmark = pytest.mark.skipif(not int4_cpu.available(), reason="this torch has no CPU int4 kernels")

CASES = [("llama", "Q4_K_M"), ("qwen2", "Q4_0"), ("qwen3", "Q4_1")]
PROMPT = "Hello world! def f(x):\n    return x"
LONG_PROMPT = " ".join(f"{PROMPT} {i}" for i in range(30))  # over twice int4_cpu.PREFILL_ROWS tokens
DTYPES = ["bfloat16", "float32"]
NEAR_TIE = 0.1  # nats, in the dequantized bfloat16 path's logprobs
LLAMA_CPP_NEAR_TIE = 0.5  # test_gguf_generate's 0.4 for quantized files, plus the bfloat16 residual stream
MAX_TOKENS = 16
# Rows per block of torch's int4 packer for each kernel set it dispatches (torch.backends.cpu.get_cpu_capability,
# which ATEN_CPU_CAPABILITY overrides): where int4_cpu.pack reproduces it, and DEFAULT (no vector kernels) a layout
# it leaves to torch's own packer.
FAST_PACK_ROWS = {"AVX512": int4_cpu.PACK_ROWS, "AVX2": int4_cpu.PACK_ROWS // 2, "DEFAULT": None}


def blocks(qtype: str, rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """GGUF blocks of a [rows, cols] matrix: gguf's own quantizer for Q4_0 / Q4_1 (random normal weights);
    random bytes for Q4_K (every byte pattern is a valid block) with float16 d / dmin near 2^-6."""
    import gguf

    rng = np.random.default_rng(seed)
    if qtype != "Q4_K":
        data = rng.standard_normal((rows, cols), dtype=np.float32)
        return torch.from_numpy(gguf.quants.quantize(data, gguf.GGMLQuantizationType[qtype]).reshape(rows, -1))
    _, type_size = gguf_dequant.block_size(qtype)
    b = rng.integers(0, 256, size=(rows * cols // 256, type_size), dtype=np.uint8)
    b[:, 1] = 0x20 + b[:, 1] % 4  # float16 exponent bits: d, dmin in [2^-7, 2^-5)
    b[:, 3] = 0x20 + b[:, 3] % 4
    return torch.from_numpy(b.reshape(rows, -1))


def reference(x: torch.Tensor, b: torch.Tensor, qtype: str, shape: tuple[int, int]) -> torch.Tensor:
    return x.float() @ gguf_dequant.dequantize(b, qtype, shape).T


@pytest.mark.parametrize("qtype", sorted(int4_cpu.INT4_TYPES))
@pytest.mark.parametrize("shape", [(16, 256), (48, 512), (128, 1024)])
@pytest.mark.parametrize("num_rows", [1, 7])
def test_int4_linear_matches_the_dequantized_matmul(qtype, shape, num_rows):
    b = blocks(qtype, *shape, seed=shape[0] + num_rows)
    x = torch.randn(num_rows, shape[1], generator=torch.Generator().manual_seed(num_rows))
    y_ref = reference(x, b, qtype, shape)
    y = int4_cpu.int4_linear(x, int4_cpu.repack(b, qtype, shape))
    bound = int4_cpu.error_bound(x, b, qtype, shape, y_ref)
    assert y.dtype == x.dtype and y.shape == y_ref.shape
    assert ((y - y_ref).abs() <= bound).all(), float(((y - y_ref).abs() / bound).max())
    assert ((y - y_ref).abs() > bound / 4).float().mean() < 0.01  # and not loose: most errors far inside


@pytest.mark.parametrize("rows", [16, 48, 64, 128, 144, 176, 4096])
def test_pack_is_torchs_packer_byte_for_byte(rows):
    """int4_cpu.pack (uint8 passes, the load's packer) gives exactly torch's _convert_weight_to_int4pack_for_cpu,
    on whole blocks of rows and every tail, and through repack for each type. The layout is the dispatched kernel
    set's: it asserted the fast path on every CPU, so ATEN_CPU_CAPABILITY=default (torch's packer) failed it."""
    q = torch.randint(0, 16, (rows, 512), generator=torch.Generator().manual_seed(rows), dtype=torch.uint8)
    torch_packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1)
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in FAST_PACK_ROWS:  # the fast path runs where torch's layout is known, and only there
        assert int4_cpu._pack_rows() == FAST_PACK_ROWS[capability], capability
    assert torch.equal(int4_cpu.pack(q), torch_packed)
    for qtype in sorted(int4_cpu.INT4_TYPES):
        b = blocks(qtype, rows, 512, seed=rows)
        _block, type_size = gguf_dequant.block_size(qtype)
        qv, scale, zero = int4_cpu._quants_and_affine(b.reshape(-1, type_size), qtype)
        expected = torch.ops.aten._convert_weight_to_int4pack_for_cpu(qv.reshape(rows, 512).to(torch.int32), 1)
        w = int4_cpu.repack(b, qtype, (rows, 512))
        assert torch.equal(w.packed, expected), qtype
        sz = torch.stack([scale.reshape(rows, -1), zero.reshape(rows, -1)], dim=2).transpose(0, 1).to(torch.bfloat16)
        assert torch.equal(w.scales_and_zeros.view(torch.int16), sz.contiguous().view(torch.int16)), qtype


@pytest.mark.parametrize("block", [int4_cpu.PACK_ROWS, int4_cpu.PACK_ROWS // 2])
@pytest.mark.parametrize("chunk_blocks", [1, 2, 100])
def test_packing_on_words_equals_packing_on_bytes(monkeypatch, block, chunk_blocks):
    """The int64-word packer (Q4_K's aligned quant bytes) and the byte packer agree for either packer block (64 rows:
    AVX-512, checked against torch above; 32: AVX2), whole blocks by chunks of 1, 2 (the last one short) or all, and
    a tail."""
    monkeypatch.setattr(int4_cpu, "_PACK_CHUNK_BYTES", chunk_blocks * block * 256)
    rows = 3 * block + 16
    b = blocks("Q4_K", rows, 512, seed=block)
    qs = int4_cpu._packed_quants(b.reshape(-1, 144), "Q4_K").view(rows, 2, 4, 32)
    assert int4_cpu._word_aligned(qs)
    q, _scale, _zero = int4_cpu._quants_and_affine(b.reshape(-1, 144), "Q4_K")
    assert torch.equal(int4_cpu._pack_nibbles(qs, block), int4_cpu._pack_blocks(q.reshape(rows, 512), block))


def test_fits_and_repack_rejects():
    assert int4_cpu.fits("Q4_K", (32, 256)) and not int4_cpu.fits("Q4_K", (40, 256))
    assert not int4_cpu.fits("Q6_K", (32, 256)) and not int4_cpu.fits("Q8_0", (32, 256))
    with pytest.raises(ValueError, match="does not fit"):
        int4_cpu.repack(blocks("Q4_0", 32, 64)[:24], "Q4_0", (24, 64))


@pytest.mark.parametrize("sizes, parts", [([64, 48, 32], 2), ([48, 64, 32], 3), ([64, 64, 32], 2)])
def test_fused_shards_stack_where_the_packer_blocks_allow(sizes, parts):
    """q / k / v style shards: Q4_K, Q4_0 (stacked when the rows above fill 64-row packer blocks) and a dense
    last shard (a Q6_K v_proj dequantized at load), each into its own output columns."""
    k = 256
    kinds = ["Q4_K", "Q4_0"]
    layer = QuantizedLinear(k, sizes, bias=False)
    x = torch.randn(5, k, generator=torch.Generator().manual_seed(0))
    expected, bounds = [], []
    for i, n in enumerate(sizes[:2]):
        b = blocks(kinds[i], n, k, seed=i)
        layer.load_shard(i, int4_cpu.repack(b, kinds[i], (n, k)))
        y_ref = reference(x, b, kinds[i], (n, k))
        expected.append(y_ref)
        bounds.append(int4_cpu.error_bound(x, b, kinds[i], (n, k), y_ref))
    dense = torch.randn(sizes[2], k)
    layer.load_shard(2, dense)
    layer.finish()
    assert len(layer.parts) == parts
    y = layer(x)
    assert (y[:, :-sizes[2]] - torch.cat(expected, 1)).abs().le(torch.cat(bounds, 1)).all()
    torch.testing.assert_close(y[:, -sizes[2]:], x @ dense.T)
    assert layer.weight_bytes() == sum(w.nbytes if isinstance(w, Int4Weight) else w.numel() * 4 for _, w in layer.parts)


def model_path(fixtures, arch: str, qtype: str):
    return fixtures.kquant(arch, qtype) if "_K" in qtype else fixtures.model(arch, qtype).path


def generate(path, quantization: str, dtype: str = "bfloat16", logprobs: int = 5, text: str = PROMPT):
    llm = LLM(model=str(path), dtype=dtype, device="cpu", kv_cache_memory=16 * 2**20, quantization=quantization)
    prompt = llm.get_tokenizer().encode(text)
    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=MAX_TOKENS, logprobs=logprobs,
                                                ignore_eos=True))[0]
    runner = llm.engine.runner
    llm.close()
    return prompt, out, runner


def int4_weights(model: torch.nn.Module) -> list[Int4Weight]:
    return [w for m in model.modules() if isinstance(m, QuantizedLinear) for _, w in m.parts if isinstance(w, Int4Weight)]


@pytest.mark.parametrize("arch, qtype", CASES)
def test_auto_on_a_bfloat16_cpu_model_runs_int4_as_the_dequantized_path_does(fixtures, arch, qtype):
    path = model_path(fixtures, arch, qtype)
    _, ours, runner = generate(path, "auto")
    _, theirs, dense_runner = generate(path, "none")
    assert runner.quantization == "int4" and dense_runner.quantization == "none"
    assert int4_weights(runner.model) and not int4_weights(dense_runner.model)
    assert "CPU int4" in runner.paths()["matmul"]
    # the memory check's prediction is what was loaded (less the rope table the runner adds), and smaller
    source = gguf_source(path, dtype="bfloat16", device="cpu")
    rope = sum(b.numel() * b.element_size() for b in runner.model.buffers())
    assert source.quantization == "int4" and runner.weight_bytes == source.weight_bytes + rope
    assert runner.weight_bytes < dense_runner.weight_bytes
    assert_greedy_agrees(ours, theirs, "bfloat16")


@pytest.mark.parametrize("arch, qtype", CASES)
def test_auto_on_a_float32_cpu_model_runs_int4_as_the_dequantized_path_does(fixtures, arch, qtype):
    """The dtype of CPUs without bfloat16 in hardware: int4 holds 0.625 bytes per 4-bit weight against 4."""
    path = model_path(fixtures, arch, qtype)
    _, ours, runner = generate(path, "auto", dtype="float32")
    _, theirs, dense_runner = generate(path, "none", dtype="float32")
    assert runner.quantization == "int4" and dense_runner.quantization == "none"
    assert runner.model.lm_head.parts[0][1].dtype == torch.float32  # the dequantized rest is float32
    if int4_unpack.supported():
        assert f"dequantized to float32 + CPU BLAS from {int4_cpu.PREFILL_ROWS_FLOAT32} rows" in runner.paths()["matmul"]
    held = int4_weights(runner.model)
    assert held and not int4_weights(dense_runner.model)
    source = gguf_source(path, dtype="float32", device="cpu")
    rope = sum(b.numel() * b.element_size() for b in runner.model.buffers())
    assert source.quantization == "int4" and runner.weight_bytes == source.weight_bytes + rope
    saved = sum(w.numel() * 4 - w.nbytes for w in held)
    assert dense_runner.weight_bytes - runner.weight_bytes == saved
    assert_greedy_agrees(ours, theirs, "float32")


def assert_greedy_agrees(ours, theirs, what: str) -> None:
    """Same tokens until they part at a near tie (in `theirs` logprobs), same logprobs up to there."""
    for step, (a, b) in enumerate(zip(ours.token_ids, theirs.token_ids)):
        if a != b:
            gap = theirs.logprobs[step][b] - theirs.logprobs[step].get(a, -np.inf)
            assert gap <= NEAR_TIE, f"step {step}: we chose {a}, {what} {b}, {gap:.3f} apart"
            break
        assert ours.logprobs[step][a] == pytest.approx(theirs.logprobs[step][b], abs=NEAR_TIE)


def scratch_bytes(model: torch.nn.Module) -> int:
    scratch = next(m.scratch for m in model.modules() if isinstance(m, QuantizedLinear))
    return 0 if scratch is None else scratch.nbytes


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arch, qtype", CASES)
def test_a_long_prompt_prefills_through_the_dequantized_weights_to_the_same_tokens(fixtures, arch, qtype, dtype,
                                                                                   monkeypatch):
    """Past prefill_rows the prefill runs the GEMM of the model's dtype on the kernel's weights: in bfloat16
    rounded (2^-9 relative), in float32 exact with x unrounded; so greedy tokens (prefill, then int4 decode) are
    the int4 kernel's up to a near tie: on these fixtures in bfloat16, qwen3-Q4_1 parts at its 16th token, 0.06
    nats from a tie; the others match."""
    path = model_path(fixtures, arch, qtype)
    prompt, ours, runner = generate(path, "auto", dtype=dtype, text=LONG_PROMPT)
    assert len(prompt) >= 2 * int4_cpu.prefill_rows(getattr(torch, dtype)) and runner.quantization == "int4"
    largest = max(w.numel() for w in int4_weights(runner.model))
    size = 4 if dtype == "float32" else 2
    if int4_unpack.supported() and (dtype == "float32" or cpu_features.has_native_bf16()):
        assert 0 < scratch_bytes(runner.model) <= size * largest  # used, and one matrix of the dtype at most
    else:  # a packing dequantize_t does not read, or an emulated bfloat16 GEMM: the kernel prefills
        assert scratch_bytes(runner.model) == 0
    monkeypatch.setattr(int4_cpu, "PREFILL_ROWS", 1 << 30)
    monkeypatch.setattr(int4_cpu, "PREFILL_ROWS_FLOAT32", 1 << 30)
    _, theirs, kernel_runner = generate(path, "auto", dtype=dtype, text=LONG_PROMPT)
    assert scratch_bytes(kernel_runner.model) == 0
    assert_greedy_agrees(ours, theirs, "the int4 kernel")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arch, qtype", CASES)
def test_int4_greedy_matches_llama_cpp(fixtures, arch, qtype, dtype):
    from tests.gguf.test_gguf_generate import _llama_cpp_greedy

    path = model_path(fixtures, arch, qtype)
    prompt, out, runner = generate(path, "auto", dtype=dtype, logprobs=1)
    assert runner.quantization == "int4"
    theirs, logits = _llama_cpp_greedy(path, tuple(prompt))
    for step, (ours, ref, row) in enumerate(zip(out.token_ids, theirs, logits)):
        if ours != ref:
            gap = row[ref] - row[ours]
            assert gap <= LLAMA_CPP_NEAR_TIE, f"step {step}: we chose {ours}, llama.cpp {ref}, {gap:.3f} apart"
            break
        log_probs = row - np.logaddexp.reduce(row)
        assert out.logprobs[step][ours] == pytest.approx(log_probs[ours], abs=LLAMA_CPP_NEAR_TIE)


def test_auto_takes_int4_for_bfloat16_and_float32_models_and_none_dequantizes(fixtures):
    path = model_path(fixtures, "qwen2", "Q4_0")
    assert resolve_quantization("auto", "cpu", "bfloat16") == "int4"
    assert resolve_quantization("auto", "cpu", "float32") == "int4"  # activations rounded to bfloat16 on the way in
    assert resolve_quantization("auto", "cpu", "float16") == "none"
    assert resolve_quantization("none", "cpu", "bfloat16") == "none"
    assert resolve_quantization("none", "cpu", "float32") == "none"
    assert gguf_source(path, dtype="float32", device="cpu").quantization == "int4"
    assert gguf_source(path, dtype="float32", device="cpu", quantization="none").quantization == "none"
    assert gguf_source(path, dtype="bfloat16", device="cpu", quantization="none").quantization == "none"
    with GGUFFile(path) as f:
        infos = list(f.tensors.values())
        assert any(stays_int4(t) for t in infos) and not stays_int4(f.tensors["token_embd.weight"])
    for itemsize in (2, 4):
        assert resident_weight_bytes(infos, "int4", itemsize) < resident_weight_bytes(infos, "none", itemsize)


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_prefill_scratch_only_where_its_gemm_is_in_hardware(monkeypatch, native, dtype):
    """The prefill switch feeds a GEMM of the model's dtype: a bfloat16 one emulated (no AVX512-BF16 or AMX-BF16)
    is slower than the int4 kernel at every size (benchmarks/data/int4_prefill_avx2.jsonl), so a bfloat16 model
    there gets no scratch and the kernel runs every size; a float32 model always gets a float32 one."""
    monkeypatch.setattr(cpu_features, "has_native_bf16", lambda flags=None: native)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Linear(32, 64))
    quantize_linears(model, dtype, {})
    scratches = [m.scratch for m in model.modules() if isinstance(m, QuantizedLinear)]
    assert len(scratches) == 2 and len({id(s) for s in scratches}) == 1  # one for the model
    assert (scratches[0] is not None) == (native or dtype == torch.float32)
    assert scratches[0] is None or scratches[0].dtype == dtype
