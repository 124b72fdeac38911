"""Causal attention of packed sequences over their own K/V (a prefill step with no cached prefix).

Such a step has every key it needs in this step's contiguous k/v, so the paged cache need not be read
back: on CUDA torch's flash-attention kernel runs on the packed tensors directly. Its varlen entry point
(`aten._flash_attention_forward` with cu_seqlens, the op under torch.nn.attention.varlen) takes the
packed [T, H, D] layout and the step's cu_seqlens as they are, shares K/V heads across query groups
(GQA) itself, and needs neither padding into a batch (copies, wasted tiles) nor a launch per sequence.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import torch
import torch.nn.functional as F

FLASH_DTYPES = (torch.float16, torch.bfloat16)


def flash_supported(q: torch.Tensor) -> bool:
    """Whether torch's flash kernel takes q [T, Hq, D] on this device: fp16/bf16, D a multiple of 8 up to
    256, an sm80+ CUDA device, flash SDPA enabled in this torch build."""
    head_dim = q.shape[-1]
    return (
        q.is_cuda
        and q.dtype in FLASH_DTYPES
        and head_dim % 8 == 0
        and head_dim <= 256
        and torch.backends.cuda.flash_sdp_enabled()
        and _capability(q.device.index) >= (8, 0)
    )


@lru_cache(maxsize=16)
def _capability(index: int | None) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def varlen_causal_attention_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, scale: float
) -> torch.Tensor:
    """q [T, Hq, D], k / v [T, Hkv, D] packed by cu_seqlens [S+1] -> [T, Hq, D]: each sequence attends
    causally over itself (float32 softmax, SDPA per sequence)."""
    out = torch.empty_like(q)
    starts = cu_seqlens.tolist()
    gqa = q.shape[1] != k.shape[1]
    for start, end in itertools.pairwise(starts):
        if end == start:
            continue
        heads_first = lambda t: t[start:end].float().transpose(0, 1)[None]  # [1, H, L, D]  # noqa: B023 (called in this iteration only)
        o = F.scaled_dot_product_attention(heads_first(q), heads_first(k), heads_first(v), is_causal=True,
                                           scale=scale, enable_gqa=gqa)
        out[start:end] = o[0].transpose(0, 1).to(q.dtype)
    return out


def varlen_causal_attention_flash(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int, scale: float
) -> torch.Tensor:
    """The same through torch's flash kernel (CUDA; see flash_supported). `max_seqlen` comes from the host
    (the longest sequence of the step), so nothing is read back from the device."""
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))  # flash takes any row stride
    cu = cu_seqlens if cu_seqlens.dtype == torch.int32 else cu_seqlens.to(torch.int32)
    out = torch.ops.aten._flash_attention_forward(
        q, k, v, cu, cu, max_seqlen, max_seqlen, 0.0, True, False, scale=scale
    )[0]
    return out


# The probe's sequences: a single token, lengths off and on the 16-row tile, and one spanning several tiles.
PROBE_SEQ_LENS = (1, 7, 16, 45)
# How far the flash kernel may stray from the float32 reference in the probe, in eps of the dtype (bf16 2^-7,
# fp16 2^-10). Outputs are convex combinations of v in [-1, 1]: each path rounds its output once (eps/2 each)
# and flash rounds the softmax weights to the input dtype before P @ V (eps/2 more); 4 eps leaves room for the
# float32 summation order. A wrong mask, scale, head grouping or sequence boundary moves outputs by ~0.1.
PROBE_TOLERANCE_EPS = 4


def probe_flash(num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                device: torch.device) -> str | None:
    """Run varlen_causal_attention_flash once on a few packed causal sequences at these shapes and compare it
    with varlen_causal_attention_ref: None when they agree, else what went wrong (it raised, returned another
    shape, or strayed past the tolerance). The result is read back, so an asynchronous CUDA error shows here."""
    gen = torch.Generator().manual_seed(0)
    total = sum(PROBE_SEQ_LENS)
    q = torch.randn(total, num_heads, head_dim, generator=gen).to(device, dtype)
    k = torch.randn(total, num_kv_heads, head_dim, generator=gen).to(device, dtype)
    v = (torch.rand(total, num_kv_heads, head_dim, generator=gen) * 2 - 1).to(device, dtype)
    cu_seqlens = torch.tensor([0, *PROBE_SEQ_LENS]).cumsum(0).to(device, torch.int32)
    scale = head_dim**-0.5
    try:
        got = varlen_causal_attention_flash(q, k, v, cu_seqlens, max(PROBE_SEQ_LENS), scale)
        if got.shape != q.shape:
            return f"returned shape {tuple(got.shape)} for queries {tuple(q.shape)}"
        want = varlen_causal_attention_ref(q, k, v, cu_seqlens, scale)
        error = (got.float() - want.float()).abs().max().item()
    except Exception as exc:  # noqa: BLE001 (any failure means: do not use this kernel)
        return f"{type(exc).__name__}: {exc}"
    tolerance = PROBE_TOLERANCE_EPS * torch.finfo(dtype).eps
    if not error <= tolerance:  # NaN fails too
        return f"max |flash - reference| = {error:.3g} > {tolerance:.3g}"
    return None
