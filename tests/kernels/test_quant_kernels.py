"""Quantized GGUF kernels (GEMV, GEMM, row dequantization) against dequantize-then-matmul in float32.

Weights are random blocks: every bit pattern of quants and packed scales, float16 scale fields kept
finite, so each test sees fresh values of every field. Shapes are odd in N and M; K holds an odd number
of blocks, and the byte tiles (block_b) are chosen so that blocks straddle tile and split-K edges.

Tolerance. The kernels dequantize with the reference's own operations (gguf_tile follows gguf_dequant),
so a weight differs from the bit-exact value by at most one float32 rounding (a fused multiply-add).
What remains is the order of the K-long float32 sums: |err| <= gamma_K * sum_k |w_nk x_mk| with
gamma_K = K * 2^-24, the classical bound, far below a type's resolution (one quantization step d moves
an output by d * |x|, some 2^10 times more). In bfloat16 the GEMM rounds each weight to bfloat16 as the
dequantize-at-load path does, and the output is rounded once: both 2^-8 relative on GPU, 2^-7 under the
interpreter (it truncates), so |err| <= 2^-7 * (2 * sum_k |w_nk x_mk| + |y|).
"""

from __future__ import annotations

import pytest
import torch

from velollm.kernels import gguf_dequant
from velollm.kernels.gguf_planes import (
    QUANT_TYPES, cat_rows, dequantize_weight, join_blocks, quantized_matmul_ref, split_planes,
)
from velollm.kernels.quant_gemm import quant_gemm_triton
from velollm.kernels.quant_gemv import MAX_ROWS, quant_gemv_triton
from velollm.kernels.quant_rows import dequantize_rows_ref, dequantize_rows_triton

TYPES = sorted(QUANT_TYPES, key=lambda name: QUANT_TYPES[name].code)
# byte offsets of each block's float16 fields
F16_FIELDS = {"Q8_0": (0,), "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2),
              "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


def random_weight(name: str, rows: int, blocks: int, device: str) -> tuple[torch.Tensor, object]:
    """(raw blocks, planes) of a [rows, blocks * QK] weight of random bytes, scales in [2^-14, 2^-1)."""
    spec = QUANT_TYPES[name]
    raw = torch.randint(0, 256, (rows * blocks, spec.type_size), dtype=torch.uint8)
    for at in F16_FIELDS[name]:
        raw[:, at + 1] = raw[:, at + 1] % 0x38 + 0x04  # sign, exponent 1..14: normal and finite
    return raw, split_planes(raw.to(device), name, (rows, blocks * spec.block))


def assert_within_bound(got: torch.Tensor, x: torch.Tensor, w, rel: float, out_rel: float = 0.0) -> None:
    dense = dequantize_weight(w).cpu()
    xf = x.float().cpu().reshape(-1, w.shape[1])
    want = xf @ dense.T
    bound = rel * (xf.abs() @ dense.abs().T) + out_rel * want.abs() + 1e-30
    err = (got.float().cpu().reshape(want.shape) - want).abs()
    assert torch.isfinite(got).all()
    assert (err <= bound).all(), f"worst error / bound = {(err / bound).max().item():.3g}"


def gamma(k: int) -> float:
    return k * 2.0**-24


@pytest.mark.parametrize("name", TYPES)
def test_planes_round_trip_to_the_file_blocks(name):
    spec = QUANT_TYPES[name]
    assert gguf_dequant.block_size(name) == (spec.block, spec.type_size)
    raw, w = random_weight(name, 3, 2, "cpu")
    assert torch.equal(join_blocks(w), raw.view(3, -1))
    assert w.nbytes == raw.numel()  # resident bytes are the file's bytes
    want = gguf_dequant.dequantize(raw, name, w.shape)
    assert torch.equal(dequantize_weight(w), want)
    assert torch.equal(dequantize_weight(cat_rows([w, w.rows(torch.tensor([2, 0]))])),
                       torch.cat([want, want[[2, 0]]]))


@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("num_rows, split_k, block_b", [(1, 1, None), (5, 3, 32)])
def test_gemv_float32(name, num_rows, split_k, block_b, device, poison):
    spec = QUANT_TYPES[name]
    blocks = 3 if spec.block == 256 else 5
    _, w = random_weight(name, 21, blocks, device)
    x = torch.randn(num_rows, w.shape[1], device=device)
    out = poison((num_rows, 21), torch.float32, device)
    got = quant_gemv_triton(x, w, out=out, split_k=split_k, block_b=block_b)
    assert got.data_ptr() == out.data_ptr()
    assert_within_bound(got, x, w, gamma(w.shape[1]))


@pytest.mark.parametrize("name", ["Q4_K", "Q6_K", "Q8_0", "Q4_0"])
def test_gemv_bfloat16_activations(name, device):
    _, w = random_weight(name, 13, 2, device)
    x = torch.randn(2, 1, w.shape[1], device=device).to(torch.bfloat16)
    got = quant_gemv_triton(x, w)
    assert got.shape == (2, 1, 13) and got.dtype == torch.bfloat16
    # float32 products of the exact weights, one rounding of the output to bfloat16
    assert_within_bound(got, x, w, gamma(w.shape[1]), out_rel=2.0**-7)


@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gemm(name, dtype, device, poison):
    spec = QUANT_TYPES[name]
    blocks = 2 if spec.block == 256 else 5
    _, w = random_weight(name, 37, blocks, device)
    x = torch.randn(MAX_ROWS + 11, w.shape[1], device=device).to(dtype)
    out = poison((x.shape[0], 37), dtype, device)
    got = quant_gemm_triton(x, w, out=out, block_n=32, block_b=32 if spec.qs_bytes > 16 else 64)
    if dtype == torch.float32:
        assert_within_bound(got, x, w, gamma(w.shape[1]))
    else:
        assert_within_bound(got, x, w, 2 * 2.0**-7, out_rel=2.0**-7)


@pytest.mark.parametrize("kernel", [quant_gemv_triton, quant_gemm_triton])
def test_writes_a_column_slice_of_a_fused_output(kernel, device, poison):
    _, w = random_weight("Q4_K", 24, 1, device)
    x = torch.randn(3, 256, device=device)
    fused = poison((3, 40), torch.float32, device)
    kernel(x, w, out=fused[:, 8:32])
    assert torch.isnan(fused[:, :8]).all() and torch.isnan(fused[:, 32:]).all()
    assert_within_bound(fused[:, 8:32], x, w, gamma(256))


@pytest.mark.parametrize("name", TYPES)
def test_dequantize_rows_is_bit_exact(name, device, poison):
    _, w = random_weight(name, 9, 2, device)
    ids = torch.tensor([[4, 0], [8, 4]], device=device)
    out = poison((2, 2, w.shape[1]), torch.float32, device)
    got = dequantize_rows_triton(ids, w, torch.float32, out=out)
    assert torch.equal(got, dequantize_rows_ref(ids, w, torch.float32))


def test_dequantize_rows_in_bfloat16(device):
    _, w = random_weight("Q6_K", 5, 1, device)
    ids = torch.tensor([1, 3], device=device)
    got = dequantize_rows_triton(ids, w, torch.bfloat16)
    want = dequantize_rows_ref(ids, w, torch.float32)
    torch.testing.assert_close(got.float(), want, rtol=2.0**-7, atol=0)


def test_reference_matches_the_gguf_spec_on_quantized_data():
    gguf = pytest.importorskip("gguf")
    data = torch.randn(6, 64).numpy()
    raw = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
    w = split_planes(torch.from_numpy(raw), "Q8_0", (6, 64))
    dense = torch.from_numpy(gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q8_0))
    x = torch.randn(2, 64)
    torch.testing.assert_close(quantized_matmul_ref(x, w), x @ dense.T, rtol=0, atol=0)


def test_bad_operands_are_refused(device):
    _, w = random_weight("Q4_0", 4, 2, device)
    with pytest.raises(ValueError, match="features"):
        quant_gemv_triton(torch.randn(1, 32, device=device), w)
    with pytest.raises(ValueError, match="at most"):
        quant_gemv_triton(torch.randn(MAX_ROWS + 1, 64, device=device), w)
    with pytest.raises(ValueError, match="unit column stride"):
        quant_gemm_triton(torch.randn(2, 64, device=device), w, out=torch.empty(4, 2, device=device).T)
    with pytest.raises(ValueError, match="whole blocks"):
        split_planes(torch.zeros(18, dtype=torch.uint8), "Q4_0", (1, 33))


def test_cpu_dispatch_runs_the_reference_without_triton(monkeypatch):
    from velollm import kernels

    def fail(*args, **kwargs):
        raise AssertionError("Triton launched for CPU tensors")

    monkeypatch.setattr(kernels.quant_gemv, "quant_gemv_triton", fail)
    monkeypatch.setattr(kernels.quant_gemm, "quant_gemm_triton", fail)
    monkeypatch.setattr(kernels.quant_rows, "dequantize_rows_triton", fail)
    _, w = random_weight("Q4_K", 6, 1, "cpu")
    x = torch.randn(2, 3, 256)
    assert torch.equal(kernels.quantized_linear(x, w), quantized_matmul_ref(x, w))
    fused = torch.zeros(6, 8)
    kernels.quantized_linear(x, w, out=fused[:, 1:7])
    assert torch.equal(fused[:, 1:7], quantized_matmul_ref(x, w).view(6, 6))
    ids = torch.tensor([5, 1])
    assert torch.equal(kernels.quantized_embedding(ids, w, torch.float32), dequantize_rows_ref(ids, w, torch.float32))
