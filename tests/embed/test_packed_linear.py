"""PackedLinear: oneDNN-packed weights give nn.Linear's result, for any number of rows."""

import pytest
import torch
from torch import nn

from velollm.embed.packed_linear import PackedLinear, can_pack, pack_linears

DTYPES = [d for d in (torch.float32, torch.bfloat16) if can_pack("cpu", d)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 15, 300])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_linear(dtype: torch.dtype, rows: int, bias: bool) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(384, 1536, bias=bias).to(dtype)
    x = torch.randn(rows, 384, dtype=dtype)
    with torch.inference_mode():
        want, got = linear(x).float(), PackedLinear(linear)(x).float()
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-4 if dtype == torch.float32 else 2e-2, rtol=1e-3 if dtype == torch.float32 else 1e-2)


def test_pack_linears_replaces_every_linear() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Sequential(nn.Linear(16, 4, bias=False)))
    x = torch.randn(3, 8)
    with torch.inference_mode():
        want = model(x)
    if not can_pack("cpu", torch.float32):
        pytest.skip("no oneDNN in this torch build")
    assert pack_linears(model) == 2
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    with torch.inference_mode():
        assert torch.allclose(model(x), want, atol=1e-5)


def test_can_pack() -> None:
    assert not can_pack("cuda", torch.float32)
    assert not can_pack("cpu", torch.float16)


def test_a_cpu_without_the_private_ops_keeps_plain_linears(monkeypatch) -> None:
    """oneDNN's packing ops are private: where they raise (another torch build or CPU), nothing is packed."""
    from velollm.embed import packed_linear

    def broken(linear: nn.Linear) -> None:
        raise RuntimeError("no such op")

    monkeypatch.setattr(packed_linear, "PackedLinear", broken)
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))
    x = torch.randn(3, 8)
    with torch.inference_mode():
        want = model(x)
        assert pack_linears(model) == 0
        assert all(isinstance(m, nn.Linear) for m in model) and torch.equal(model(x), want)
