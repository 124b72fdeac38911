"""SiLU*mul fused into the down-projection GEMV for a few decode rows, against silu_and_mul + linear."""

from __future__ import annotations

import pytest
import torch

from velollm import kernels
from velollm.kernels import silu_gemv as sg

TOL = {torch.float32: dict(atol=1e-4, rtol=1e-4), torch.bfloat16: dict(atol=3e-2, rtol=3e-2)}


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("rows", [1, 2, 3, 4])
@pytest.mark.parametrize("inter,n,block_k", [(256, 64, 64), (200, 37, 64), (1024, 48, None)])
def test_silu_mul_gemv(rows, inter, n, block_k, dtype, device, poison):
    # Even and ragged K tiles (200 = 3 x 64 + 8), a row count that is not a power of two, N not a tile multiple.
    x = (torch.randn(rows, 2 * inter, device=device) * 2).to(dtype)
    w = (torch.randn(n, inter, device=device) / inter ** 0.5).to(dtype)
    out = poison((rows, n), dtype, device)
    got = sg.silu_mul_gemv_triton(x, w, out=out, block_n=16, block_k=block_k)
    assert got.data_ptr() == out.data_ptr()
    want = sg.silu_mul_gemv_ref(x.float(), w.float()) if dtype == torch.float32 else sg.silu_mul_gemv_ref(x, w)
    torch.testing.assert_close(got, want.to(dtype), **TOL[dtype])


def test_silu_mul_gemv_keeps_leading_dims_and_strided_rows(device):
    x = torch.randn(2, 1, 2 * 96 + 5, device=device)[..., 5:]  # rows with a stride past 2I
    w = torch.randn(40, 96, device=device)
    got = sg.silu_mul_gemv_triton(x, w)
    assert got.shape == (2, 1, 40)
    torch.testing.assert_close(got, sg.silu_mul_gemv_ref(x, w), atol=1e-4, rtol=1e-4)


def test_silu_mul_gemv_rejects_bad_shapes(device):
    with pytest.raises(ValueError, match="at most"):
        sg.silu_mul_gemv_triton(torch.zeros(5, 8, device=device), torch.zeros(3, 4, device=device))
    with pytest.raises(ValueError, match="do not fit"):
        sg.silu_mul_gemv_triton(torch.zeros(1, 8, device=device), torch.zeros(3, 5, device=device))


def test_silu_down_switch(monkeypatch):
    x, w = torch.zeros(1, 8), torch.zeros(3, 4)
    monkeypatch.delenv(kernels.SILU_DOWN_GEMV_ENV, raising=False)
    assert not kernels.KernelSwitches.from_env().silu_down_gemv  # off by default until a GPU run decides
    monkeypatch.setenv(kernels.SILU_DOWN_GEMV_ENV, "1")
    assert kernels.KernelSwitches.from_env().silu_down_gemv
    assert not kernels.silu_down_fused(x, w)  # CPU tensors keep the two torch ops, switch or not
