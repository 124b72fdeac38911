"""down_proj(silu(gate) * up) for a few rows (decode): the activation computed in the GEMV's prologue.

The unfused decode MLP tail is two kernels: silu_and_mul writes [M, I] and the down-projection GEMV reads
it back. Here each program owns BLOCK_N rows of W [N, I] and streams them in BLOCK_K tiles over the whole
of K = I; the activation of that K tile is recomputed from the gate/up halves (M rows, a few KB, L2-hot)
for every program. No split-K: decode's down projections have N (hidden size) >= 2048 rows, which already
gives hundreds of programs, and a split would need a second kernel (the one this fusion removes).
float32 accumulation; the activation is rounded to the model dtype as silu_and_mul stores it.

Behind $VELOLLM_SILU_DOWN_GEMV=1 (kernels.silu_down_fused), off by default: cuBLAS' GEMV is the bar, and
benchmarks/decode_fusions.py prints both on the GPU.
"""

from __future__ import annotations

import torch

from velollm.kernels._triton import interpreter_tile, output_buffer, tl, triton
from velollm.kernels.activation import silu_and_mul_ref

MAX_ROWS = 4
_BLOCK_N = 4
_BLOCK_K = 512


def silu_mul_gemv_ref(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [..., 2I] (gate | up), weight [N, I] -> [..., N]: the two ops the kernel fuses."""
    return torch.nn.functional.linear(silu_and_mul_ref(x), weight)


@triton.jit
def _silu_mul_gemv_kernel(
    x_ptr, w_ptr, out_ptr, M, N, inter, x_stride, w_stride, out_stride,
    M_PAD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    w_rows = w_ptr + rows.to(tl.int64)[:, None] * w_stride
    m = tl.arange(0, M_PAD)
    m_mask = m < M
    x_rows = x_ptr + m.to(tl.int64)[:, None] * x_stride
    kk = tl.arange(0, BLOCK_K)
    dtype = out_ptr.dtype.element_ty
    acc = tl.zeros([M_PAD, BLOCK_N], tl.float32)
    for k0 in range(0, inter, BLOCK_K):
        k = k0 + kk
        if EVEN_K:
            w = tl.load(w_rows + k[None, :], mask=row_mask[:, None], other=0.0)
            gate = tl.load(x_rows + k[None, :], mask=m_mask[:, None], other=0.0).to(tl.float32)
            up = tl.load(x_rows + inter + k[None, :], mask=m_mask[:, None], other=0.0).to(tl.float32)
        else:
            k_mask = k < inter
            w = tl.load(w_rows + k[None, :], mask=row_mask[:, None] & k_mask[None, :], other=0.0)
            gate = tl.load(x_rows + k[None, :], mask=m_mask[:, None] & k_mask[None, :], other=0.0).to(tl.float32)
            up = tl.load(x_rows + inter + k[None, :], mask=m_mask[:, None] & k_mask[None, :], other=0.0).to(tl.float32)
        # silu rounded to the model dtype, then the product rounded: what silu_and_mul hands the GEMV.
        act = ((gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32) * up).to(dtype).to(tl.float32)
        acc += tl.sum(act[:, None, :] * w.to(tl.float32)[None, :, :], axis=2)
    out = out_ptr + m[:, None] * out_stride + rows[None, :]
    tl.store(out, acc.to(dtype), mask=m_mask[:, None] & row_mask[None, :])


def silu_mul_gemv_triton(x: torch.Tensor, weight: torch.Tensor, *, out: torch.Tensor | None = None,
                         block_n: int | None = None, block_k: int | None = None, num_warps: int = 4) -> torch.Tensor:
    """x [..., 2I] (at most MAX_ROWS rows), weight [N, I] in x's dtype -> [..., N]. `block_n`, `block_k`,
    `num_warps` exist for benchmarks/decode_fusions.py and tests."""
    inter = x.shape[-1] // 2
    n = weight.shape[0]
    if x.shape[-1] != 2 * inter or weight.shape[1] != inter:
        raise ValueError(f"x [..., 2I] and weight [N, I] do not fit: {tuple(x.shape)}, {tuple(weight.shape)}")
    if weight.dtype != x.dtype or weight.stride(-1) != 1:
        raise ValueError("weight must be contiguous along K and in x's dtype")
    x2 = x.reshape(-1, x.shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    rows = x2.shape[0]
    if rows > MAX_ROWS:
        raise ValueError(f"silu_mul_gemv handles at most {MAX_ROWS} rows, got {rows}")
    out2 = output_buffer(out, (*x.shape[:-1], n), x.dtype, x.device, "out").view(rows, n)
    block_n = block_n or interpreter_tile(_silu_mul_gemv_kernel, n, _BLOCK_N)
    block_k = block_k or min(_BLOCK_K, triton.next_power_of_2(inter))
    if rows and n:
        _silu_mul_gemv_kernel[(triton.cdiv(n, block_n),)](
            x2, weight, out2, rows, n, inter, x2.stride(0), weight.stride(0), out2.stride(0),
            M_PAD=triton.next_power_of_2(rows), BLOCK_N=block_n, BLOCK_K=block_k, EVEN_K=inter % block_k == 0,
            num_warps=num_warps,
        )
    return out2.view(*x.shape[:-1], n)
