"""SiLU(gate) * up over the fused gate_up projection output."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from velollm.kernels._triton import output_buffer, tl, triton


def silu_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    """x[..., 2I] -> silu(x[..., :I]) * x[..., I:] (rounded like HF: silu in dtype, then the product)."""
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up


@triton.jit
def _silu_and_mul_kernel(x_ptr, out_ptr, x_stride, out_stride, inter, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < inter
    gate = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * x_stride + inter + cols, mask=mask, other=0.0).to(tl.float32)
    dtype = out_ptr.dtype.element_ty
    # silu rounded to the model dtype before the product, as F.silu(gate) * up rounds.
    act = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)
    tl.store(out_ptr + row * out_stride + cols, (act * up).to(dtype), mask=mask)


def silu_and_mul_triton(x: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    if x.shape[-1] % 2:
        raise ValueError(f"last dim must be even (gate and up halves), got {x.shape[-1]}")
    inter = x.shape[-1] // 2
    x2 = x.reshape(-1, x.shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    out = output_buffer(out, (*x.shape[:-1], inter), x.dtype, x.device, "out").view(x2.shape[0], inter)
    block = min(1024, triton.next_power_of_2(inter))
    if x2.shape[0]:
        _silu_and_mul_kernel[(x2.shape[0], triton.cdiv(inter, block))](
            x2, out, x2.stride(0), out.stride(0), inter, BLOCK=block
        )
    return out.view(*x.shape[:-1], inter)
