"""RMSNorm, fused add+RMSNorm and SiLU*mul Triton kernels against their torch references."""

from __future__ import annotations

import pytest
import torch

from velollm.kernels import activation, norm

# Max error per dtype. bfloat16/float16: two units in the last place, since the kernel rounds twice like
# HF does (normed -> dtype, then the weight product) and the CPU interpreter truncates fp32 -> bf16
# where the GPU rounds to nearest.
TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
    torch.float16: dict(atol=4e-3, rtol=4e-3),
}
DTYPES = list(TOL)
SHAPES = [(1, 64), (7, 4096), (3, 5, 96), (4, 1000)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_rms_norm(shape, dtype, device, poison):
    x = torch.randn(shape, device=device).to(dtype) * 3
    w = torch.randn(shape[-1], device=device).to(dtype)
    out = poison(shape, dtype, device)
    got = norm.rms_norm_triton(x, w, 1e-6, out=out)
    assert got.data_ptr() == out.data_ptr()
    torch.testing.assert_close(got, norm.rms_norm_ref(x, w, 1e-6), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_fused_add_rms_norm(shape, dtype, device, poison):
    x = torch.randn(shape, device=device).to(dtype)
    residual = torch.randn(shape, device=device).to(dtype) * 4
    w = torch.randn(shape[-1], device=device).to(dtype)
    out, res_out = poison(shape, dtype, device), poison(shape, dtype, device)
    got, got_res = norm.fused_add_rms_norm_triton(x, residual, w, 1e-5, out=out, residual_out=res_out)
    want, want_res = norm.fused_add_rms_norm_ref(x, residual, w, 1e-5)
    # The sum of two values of one dtype, rounded once: the interpreter may differ by its truncation only.
    torch.testing.assert_close(got_res, want_res, **TOL[dtype])
    torch.testing.assert_close(got, want, **TOL[dtype])


def test_fused_add_rms_norm_in_place_residual(device):
    x = torch.randn(5, 128, device=device)
    residual = torch.randn(5, 128, device=device)
    w = torch.randn(128, device=device)
    want, want_res = norm.fused_add_rms_norm_ref(x, residual, w, 1e-6)
    got, got_res = norm.fused_add_rms_norm_triton(x, residual, w, 1e-6, residual_out=residual)
    assert got_res.data_ptr() == residual.data_ptr()
    torch.testing.assert_close(residual, want_res, **TOL[torch.float32])
    torch.testing.assert_close(got, want, **TOL[torch.float32])


def test_rms_norm_rejects_wrong_weight(device):
    with pytest.raises(ValueError, match="weight"):
        norm.rms_norm_triton(torch.randn(2, 64, device=device), torch.ones(32, device=device), 1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 128), (7, 3000), (2, 3, 192)])
def test_silu_and_mul(shape, dtype, device, poison):
    x = (torch.randn(shape, device=device) * 3).to(dtype)
    out = poison((*shape[:-1], shape[-1] // 2), dtype, device)
    got = activation.silu_and_mul_triton(x, out=out)
    assert got.data_ptr() == out.data_ptr()
    torch.testing.assert_close(got, activation.silu_and_mul_ref(x), **TOL[dtype])


def test_silu_and_mul_rejects_odd_width(device):
    with pytest.raises(ValueError, match="even"):
        activation.silu_and_mul_triton(torch.randn(2, 7, device=device))
