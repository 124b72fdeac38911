"""Compute kernels: Triton on CUDA tensors, the torch references (the CPU production path) otherwise.

Importing this package never initialises CUDA. Where a choice between kernels is switchable, the caller
passes it (config.KernelSwitches, read once where the engine is configured): nothing here reads the
environment.
"""

from __future__ import annotations

import torch

from velollm.config import (
    DECODE_FUSED_REDUCE_ENV,
    PREFILL_ATTENTION_ENV,
    PREFILL_PATHS,
    SILU_DOWN_GEMV_ENV,
    KernelSwitches,
    RopeScaling,
)
from velollm.kernels import (
    activation,
    decode_attention,
    norm,
    prefill_attention,
    quant_gemm,
    quant_gemv,
    quant_rows,
    rope,
    silu_gemv,
    varlen_attention,
)
from velollm.kernels._triton import HAS_TRITON
from velollm.kernels.fp8 import as_stored
from velollm.kernels.gguf_planes import QuantizedWeight, quantized_matmul_ref
from velollm.kernels.rope import build_cos_sin_cache


def _use_triton(t: torch.Tensor) -> bool:
    return HAS_TRITON and t.is_cuda


def kernel_backend(t: torch.Tensor) -> str:
    """Which implementation these functions run for tensors like `t`: "triton" or "torch" (for logs, benchmarks)."""
    return "triton" if _use_triton(t) else "torch"


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF Llama RMSNorm over the last dim; float32 statistics, result in x.dtype."""
    if _use_triton(x):
        return norm.rms_norm_triton(x, weight, eps)
    return norm.rms_norm_ref(x, weight, eps)


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(x + residual), x + residual), the add in the model dtype."""
    if _use_triton(x):
        return norm.fused_add_rms_norm_triton(x, residual, weight, eps)
    return norm.fused_add_rms_norm_ref(x, residual, weight, eps)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x[..., 2I] -> silu(x[..., :I]) * x[..., I:]."""
    if _use_triton(x):
        return activation.silu_and_mul_triton(x)
    return activation.silu_and_mul_ref(x)


def rope_and_cache(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q [T, Hq, D] / k [T, Hkv, D] (neox), write k_rot and v at slot_mapping (-1 skipped)."""
    if _use_triton(q):
        return rope.rope_and_cache_triton(q, k, v, positions, cos_sin_cache, k_cache, v_cache, slot_mapping)
    return rope.rope_and_cache_ref(q, k, v, positions, cos_sin_cache, k_cache, v_cache, slot_mapping)


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    fused_reduce: bool = False,
) -> torch.Tensor:
    """One query token per sequence: q [B, Hq, D] -> [B, Hq, D] over the paged KV.

    `fused_reduce` (KernelSwitches.decode_fused_reduce, $VELOLLM_DECODE_FUSED_REDUCE=1): split decode attention
    (batch 1 in a wide graph table splits up to 64 ways) merges its splits in the last split's program instead
    of a second kernel. Off until a GPU run of benchmarks/decode_attention.py (decode_attention_b1_cfg rows,
    fused_reduce) shows it faster."""
    if _use_triton(q):
        return decode_attention.paged_decode_attention_triton(q, k_cache, v_cache, block_tables, context_lens, scale,
                                                              fused_reduce=fused_reduce)
    return decode_attention.paged_decode_attention_ref(q, k_cache, v_cache, block_tables, context_lens, scale)


def paged_prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    max_query_len: int | None = None,
) -> torch.Tensor:
    """Causal attention of packed queries q [T, Hq, D] over paged KV that already holds them.

    Pass `max_query_len` when known: the Triton path otherwise reads cu_seqlens_q on the host.
    """
    if _use_triton(q):
        return prefill_attention.paged_prefill_attention_triton(
            q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, scale, max_query_len=max_query_len
        )
    return prefill_attention.paged_prefill_attention_ref(
        q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, scale
    )


PREFILL_PATH_ENV = PREFILL_ATTENTION_ENV


def silu_down_fused(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether silu_mul_gemv can fuse gate_up output `x` with a plain down-projection `weight`: CUDA, weight in
    x's dtype, at most silu_gemv.MAX_ROWS rows. The MLP asks only where KernelSwitches.silu_down_gemv is on
    ($VELOLLM_SILU_DOWN_GEMV=1: off by default until benchmarks/decode_fusions.py shows the Triton GEMV beating
    silu_and_mul + cuBLAS on the GPU)."""
    return _use_triton(x) and weight.dtype == x.dtype and x.numel() <= silu_gemv.MAX_ROWS * x.shape[-1]


def silu_mul_gemv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """silu(x[..., :I]) * x[..., I:] @ weight^T in one kernel (a few decode rows; see silu_down_fused)."""
    return silu_gemv.silu_mul_gemv_triton(x, weight)


def prefill_attention_path(q: torch.Tensor, choice: str = "auto") -> str:
    """For a prefill step with no cached prefix (every key is in this step's k/v): "varlen" (attention over
    the step's contiguous k/v, varlen_prefill_attention) or "paged" (paged_prefill_attention).

    `choice` (KernelSwitches.prefill_attention, $VELOLLM_PREFILL_ATTENTION): "auto" takes varlen where torch's
    flash kernel runs (CUDA, fp16/bf16: benchmarks/GPU_NOTES.md run 1, H100, 16 x 512 causal: the paged Triton
    kernel reached 0.47x flash) and paged elsewhere (on CPU both are SDPA per sequence); "varlen" and "paged"
    force one (benchmarks/prefill_attention.py prints both). Steps with a cached prefix always take the paged
    path. The model runner settles "auto" once per engine, after a probe of the flash kernel (prefill_probe).
    """
    if choice not in PREFILL_PATHS:
        raise ValueError(f"prefill attention path must be one of {', '.join(PREFILL_PATHS)}, not {choice!r}")
    if choice == "auto":
        return "varlen" if varlen_attention.flash_supported(q) else "paged"
    return choice


def varlen_prefill_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor, max_query_len: int, scale: float
) -> torch.Tensor:
    """Causal attention of packed sequences q [T, Hq, D] over their own k / v [T, Hkv, D] (no cached
    prefix): torch's flash kernel where it runs, SDPA per sequence otherwise."""
    if varlen_attention.flash_supported(q):
        return varlen_attention.varlen_causal_attention_flash(q, k, v, cu_seqlens_q, max_query_len, scale)
    return varlen_attention.varlen_causal_attention_ref(q, k, v, cu_seqlens_q, scale)


def quantized_linear(x: torch.Tensor, weight: QuantizedWeight, out: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ W^T with W in GGUF planes -> [..., N] in x.dtype (or into `out`, a 2-D [M, N] view).

    On CUDA the Triton kernels (quantized_linear_triton). Elsewhere the torch reference: W dequantized
    for this call, never kept."""
    if _use_triton(x):
        return quantized_linear_triton(x, weight, out)
    y = quantized_matmul_ref(x, weight)
    return y if out is None else out.copy_(y.reshape(out.shape))


def quantized_linear_triton(x: torch.Tensor, weight: QuantizedWeight, out: torch.Tensor | None = None) -> torch.Tensor:
    """The dispatch by number of rows: the GEMV for at most quant_gemv.MAX_ROWS rows (decode), the GEMM
    above (prefill, big batches)."""
    rows = x.numel() // max(1, x.shape[-1])
    kernel = quant_gemv.quant_gemv_triton if rows <= quant_gemv.MAX_ROWS else quant_gemm.quant_gemm_triton
    return kernel(x, weight, out=out)


def quantized_embedding(ids: torch.Tensor, weight: QuantizedWeight, dtype: torch.dtype) -> torch.Tensor:
    """Rows `ids` of a GGUF-quantized embedding, dequantized -> [*ids.shape, K] in `dtype`."""
    if _use_triton(ids):
        return quant_rows.dequantize_rows_triton(ids, weight, dtype)
    return quant_rows.dequantize_rows_ref(ids, weight, dtype)


__all__ = [
    "DECODE_FUSED_REDUCE_ENV",
    "HAS_TRITON",
    "PREFILL_PATHS",
    "PREFILL_PATH_ENV",
    "SILU_DOWN_GEMV_ENV",
    "KernelSwitches",
    "QuantizedWeight",
    "RopeScaling",
    "as_stored",
    "build_cos_sin_cache",
    "fused_add_rms_norm",
    "kernel_backend",
    "paged_decode_attention",
    "paged_prefill_attention",
    "prefill_attention_path",
    "quantized_embedding",
    "quantized_linear",
    "rms_norm",
    "rope_and_cache",
    "silu_and_mul",
    "silu_down_fused",
    "silu_mul_gemv",
    "varlen_prefill_attention",
]
