"""Causal attention of packed sequences over their own K/V (a prefill step with no cached prefix).

Such a step has every key it needs in this step's contiguous k/v, so the paged cache need not be read
back: on CUDA torch's flash-attention kernel runs on the packed tensors directly. Its varlen entry point
(`aten._flash_attention_forward` with cu_seqlens, the op under torch.nn.attention.varlen) takes the
packed [T, H, D] layout and the step's cu_seqlens as they are, shares K/V heads across query groups
(GQA) itself, and needs neither padding into a batch (copies, wasted tiles) nor a launch per sequence.
"""

from __future__ import annotations

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
    for start, end in zip(starts[:-1], starts[1:]):
        if end == start:
            continue
        heads_first = lambda t: t[start:end].float().transpose(0, 1)[None]  # [1, H, L, D]
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
