"""The CPU int4 layout dequantized for prefill (velollm.kernels.int4_unpack) and int4_linear's dispatch.

Bit for bit, on every 4-bit type and on shapes with and without a tail block (16/32/48 rows) and stacked
shards, in the packing of this CPU (64-row blocks with AVX-512, 32 with AVX2): the dequantized weight equals
what the int4 kernel computes with (its output for x = identity, both rounded to bfloat16 to nearest even), and
the exact GGUF mapping with bfloat16 scale and zero from the GGUF blocks (int4_cpu's decoder); for Q4_0 blocks
whose scales are bfloat16 numbers, gguf_dequant's float32 weights themselves (equal values: zeros may differ
in sign). In float32 (a float32 model's scratch) the same mapping before the rounding, bit for bit.
"""

from __future__ import annotations

import pytest
import torch

from tests.gguf.test_gguf_int4_cpu import blocks, reference
from velollm.engine.models.quantized_linear import QuantizedLinear
from velollm.kernels import gguf_dequant, int4_cpu, int4_unpack
from velollm.kernels.int4_unpack import Int4Scratch

pytestmark = pytest.mark.skipif(not int4_unpack.supported(), reason="no CPU int4 kernels, or another packing")

# rows % 64: 16, 48, 0, 16, 48, 16, 32, 32 (and % 32: 16, 16, 0, 16, 16, 16, 0, 0)
SHAPES = [(16, 256), (48, 512), (64, 256), (80, 256), (112, 768), (208, 256), (96, 256), (160, 512)]


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int16)


def kernel_weights(w: int4_cpu.Int4Weight) -> torch.Tensor:
    """W^T [K, N] as the int4 kernel computes with it, rounded to bfloat16: its product with the identity."""
    eye = torch.eye(w.shape[1], dtype=torch.bfloat16)
    return torch.ops.aten._weight_int4pack_mm_for_cpu(eye, w.packed, int4_cpu.GROUP, w.scales_and_zeros)


def gguf_weights(b: torch.Tensor, qtype: str, shape: tuple[int, int],
                 dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """W^T from the GGUF blocks: (q - 8) * scale + zero in float32, scale and zero rounded to bfloat16, then `dtype`."""
    _, type_size = gguf_dequant.block_size(qtype)
    q, scale, zero = int4_cpu._quants_and_affine(b.reshape(-1, type_size), qtype)
    rows, cols = shape
    s = scale.to(torch.bfloat16).float().reshape(rows, -1).repeat_interleave(int4_cpu.GROUP, 1)
    z = zero.to(torch.bfloat16).float().reshape(rows, -1).repeat_interleave(int4_cpu.GROUP, 1)
    return ((q.reshape(rows, cols).float() - 8) * s + z).to(dtype).T


@pytest.mark.parametrize("qtype", sorted(int4_cpu.INT4_TYPES))
@pytest.mark.parametrize("shape", SHAPES)
def test_dequantized_weights_are_the_kernels_bit_for_bit(qtype, shape):
    if qtype == "Q4_K" and shape[1] % 256:
        pytest.skip("Q4_K rows are whole 256-element blocks")
    b = blocks(qtype, *shape, seed=shape[0])
    w = int4_cpu.repack(b, qtype, shape)
    ours = int4_unpack.dequantize_t(w, Int4Scratch())
    assert ours.shape == (shape[1], shape[0]) and ours.dtype == torch.bfloat16
    assert torch.equal(bits(ours), bits(kernel_weights(w)))
    assert torch.equal(bits(ours), bits(gguf_weights(b, qtype, shape)))


@pytest.mark.parametrize("qtype", sorted(int4_cpu.INT4_TYPES))
@pytest.mark.parametrize("shape", SHAPES[1::2])
def test_float32_weights_are_the_kernels_before_its_rounding(qtype, shape):
    """A float32 model's scratch: the exact (q - 8) * scale + zero of the bfloat16 scale and zero (one rounding,
    as the kernel's fma), which the kernel's weights are rounded to bfloat16."""
    if qtype == "Q4_K" and shape[1] % 256:
        pytest.skip("Q4_K rows are whole 256-element blocks")
    b = blocks(qtype, *shape, seed=shape[0] + 1)
    w = int4_cpu.repack(b, qtype, shape)
    scratch = Int4Scratch(dtype=torch.float32)
    ours = int4_unpack.dequantize_t(w, scratch)
    assert ours.dtype == torch.float32 and scratch.nbytes == shape[0] * shape[1] * 4
    assert torch.equal(ours, gguf_weights(b, qtype, shape, torch.float32))
    assert torch.equal(bits(ours.to(torch.bfloat16)), bits(kernel_weights(w)))


def test_a_scratch_holds_bfloat16_or_float32():
    with pytest.raises(ValueError, match="float16"):
        Int4Scratch(dtype=torch.float16)


def test_q4_0_with_bfloat16_scales_is_gguf_dequant_exactly():
    rows, cols = 80, 512
    b = blocks("Q4_0", rows, cols).clone()
    d = b.view(-1, 18)[:, :2].contiguous().view(torch.int16)
    b.view(-1, 18)[:, :2] = (d & ~0x7).view(torch.uint8).view(-1, 2)  # float16 d with 8 significant bits
    exact = gguf_dequant.dequantize(b, "Q4_0", (rows, cols))
    ours = int4_unpack.dequantize_t(int4_cpu.repack(b, "Q4_0", (rows, cols)), Int4Scratch())
    # equal values: gguf_dequant's (0) * (-d) is -0.0 where the kernel's fma(0, d, +0.0) is +0.0
    assert torch.equal(ours, exact.to(torch.bfloat16).T)


def test_stacked_shards_dequantize_as_one_matrix():
    """Fused q/k/v: a Q4_K and a Q4_0 shard of whole 64-row blocks, and a Q4_1 shard with a 16-row tail."""
    cols, parts = 256, [("Q4_K", 64), ("Q4_0", 128), ("Q4_1", 80)]
    raw = [(q, blocks(q, n, cols, seed=n)) for q, n in parts]
    w = int4_cpu.cat_rows([int4_cpu.repack(b, q, (n, cols)) for (q, b), (_, n) in zip(raw, parts)])
    expected = torch.cat([gguf_weights(b, q, (n, cols)) for (q, b), (_, n) in zip(raw, parts)], dim=1)
    ours = int4_unpack.dequantize_t(w, Int4Scratch())
    assert torch.equal(bits(ours), bits(expected)) and torch.equal(bits(ours), bits(kernel_weights(w)))


@pytest.mark.parametrize("qtype", sorted(int4_cpu.INT4_TYPES))
def test_a_float32_scratch_switches_to_the_float32_gemm_at_its_rows(qtype):
    """A float32 model: the kernel (bfloat16 activations) below prefill_rows(float32), from there x unrounded
    times the float32 weights, which stays within the kernel's own bound."""
    shape = (96, 512)
    b = blocks(qtype, *shape, seed=2)
    w = int4_cpu.repack(b, qtype, shape)
    scratch = Int4Scratch(dtype=torch.float32)
    switch = int4_cpu.prefill_rows(torch.float32)
    assert switch == int4_cpu.PREFILL_ROWS_FLOAT32 and int4_cpu.prefill_rows(torch.bfloat16) == int4_cpu.PREFILL_ROWS
    for num_rows in (1, switch - 1, switch, 2 * switch + 3):
        x = torch.randn(num_rows, shape[1], generator=torch.Generator().manual_seed(num_rows))
        y = int4_cpu.int4_linear(x, w, scratch)
        assert y.dtype == torch.float32
        if num_rows < switch:
            kernel = torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16), w.packed, int4_cpu.GROUP,
                                                                w.scales_and_zeros)
            assert torch.equal(y, kernel.float()), num_rows
        else:
            assert torch.equal(y, x @ gguf_weights(b, qtype, shape, torch.float32)), num_rows
        y_ref = reference(x, b, qtype, shape)
        bound = int4_cpu.error_bound(x, b, qtype, shape, y_ref)
        assert ((y - y_ref).abs() <= bound).all(), float(((y - y_ref).abs() / bound).max())


@pytest.mark.parametrize("qtype", sorted(int4_cpu.INT4_TYPES))
def test_int4_linear_switches_to_the_dequantized_gemm_at_prefill_rows(qtype):
    shape = (80, 512)
    b = blocks(qtype, *shape, seed=1)
    w = int4_cpu.repack(b, qtype, shape)
    scratch = Int4Scratch()
    for num_rows in (1, int4_cpu.PREFILL_ROWS - 1, int4_cpu.PREFILL_ROWS, 3 * int4_cpu.PREFILL_ROWS + 5):
        x = torch.randn(num_rows, shape[1], generator=torch.Generator().manual_seed(num_rows))
        y = int4_cpu.int4_linear(x, w, scratch)
        x16 = x.to(torch.bfloat16)
        kernel = torch.ops.aten._weight_int4pack_mm_for_cpu(x16, w.packed, int4_cpu.GROUP, w.scales_and_zeros)
        assert torch.equal(int4_cpu.int4_linear(x, w), kernel.float())  # no scratch: always the kernel
        expected = kernel if num_rows < int4_cpu.PREFILL_ROWS else x16 @ kernel_weights(w)
        assert torch.equal(y, expected.float()), num_rows
        y_ref = reference(x, b, qtype, shape)
        bound = int4_cpu.error_bound(x, b, qtype, shape, y_ref, dequantized=num_rows >= int4_cpu.PREFILL_ROWS)
        assert ((y - y_ref).abs() <= bound).all(), float(((y - y_ref).abs() / bound).max())


def test_one_scratch_serves_every_layer_at_the_size_of_the_largest():
    """Layers share the model's scratch: it grows to the largest int4 matrix once and is reused, so the
    prefill path holds one bfloat16 matrix, not a copy per layer."""
    scratch = Int4Scratch()
    layers = []
    for rows, cols in [(128, 256), (192, 512), (64, 512)]:
        layer = QuantizedLinear(cols, [rows], bias=False, scratch=scratch)
        layer.load_shard(0, int4_cpu.repack(blocks("Q4_0", rows, cols, seed=rows), "Q4_0", (rows, cols)))
        layer.finish()
        layers.append(layer)
    x_rows = int4_cpu.PREFILL_ROWS
    for layer in layers:
        layer(torch.randn(x_rows, layer.in_features))
    assert scratch.nbytes == 192 * 512 * 2
    storage = scratch.buffer.data_ptr()
    for layer in layers:
        layer(torch.randn(x_rows, layer.in_features))
    assert scratch.buffer.data_ptr() == storage


def test_supported_checks_the_packing_on_a_probe(monkeypatch):
    assert int4_unpack.supported()  # the module's skip already needs it: the packing of this CPU, as probed
    block = int4_cpu._pack_rows()
    assert block in (32, 64)
    int4_unpack.supported.cache_clear()
    monkeypatch.setattr(int4_unpack, "_block_rows", lambda: 96 - block)  # the other CPU's: the probe fails
    try:
        assert not int4_unpack.supported()
    finally:
        int4_unpack.supported.cache_clear()


THREADS_PROBE = """
import threading

import torch
from torch import nn

torch.set_num_threads(3)  # the process's count, whatever this CPU has
from velollm.engine.models.quantized_linear import quantize_linears
from velollm.kernels import int4_cpu, int4_unpack

with torch.device("meta"):
    model = nn.Sequential(nn.Linear(64, 80, bias=False))
quantize_linears(model, torch.float32, {})  # a float32 model has a scratch on every CPU
scratch = model[0].scratch  # the model's, as the engine builds it
gen = torch.Generator().manual_seed(0)
q = torch.randint(0, 16, (80, 64), generator=gen, dtype=torch.int32)
packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
sz = torch.randn(2, 80, 2, generator=gen).to(torch.bfloat16)
w = int4_cpu.Int4Weight((80, 64), packed, sz)
seen = {}
tail = int4_unpack._tail_block

def spying_tail(*args):  # inside the dequantization: its thread's count, and a thread starting meanwhile
    seen["worker"] = torch.get_num_threads()
    thread = threading.Thread(target=lambda: seen.setdefault("new", torch.get_num_threads()))
    thread.start()
    thread.join()
    return tail(*args)

int4_unpack._tail_block = spying_tail
with torch.inference_mode():  # as the forward pass
    ours = int4_unpack.dequantize_t(w, scratch).clone()
kernel = torch.ops.aten._weight_int4pack_mm_for_cpu(torch.eye(64, dtype=torch.bfloat16), packed, 32, sz)
same = torch.equal(ours.to(torch.bfloat16).view(torch.int16), kernel.view(torch.int16))
print(seen["worker"], seen["new"], torch.get_num_threads(), same)
"""


def test_dequantization_runs_on_one_thread_and_leaves_the_process_count_alone():
    """The model's dequantization runs on one torch thread, but not by torch.set_num_threads on the forward's
    thread: that count is process-wide for any thread's first read, so a thread starting its first op meanwhile
    (a model loaded on demand during a CPU prefill) ran on one thread for good. A fresh interpreter: the count is
    process-wide."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", THREADS_PROBE], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "3", "3", "True"]
