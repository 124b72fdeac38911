"""Which attention kernel prefill steps without a cached prefix take on this engine, settled once at start."""

from __future__ import annotations

import dataclasses
import logging

import torch

from velollm import kernels
from velollm.config import KernelSwitches, ModelConfig
from velollm.kernels import varlen_attention

logger = logging.getLogger(__name__)


def settle_prefill_path(switches: KernelSwitches, config: ModelConfig, dtype: torch.dtype,
                        device: torch.device) -> KernelSwitches:
    """`switches` with prefill_attention "varlen" or "paged" for this model and device.

    "auto" takes torch's flash varlen kernel only where it runs (CUDA sm80+, fp16/bf16) and passes a probe at
    the model's head counts, head_dim and dtype: the kernel's op is private to torch and has never run in CI,
    so a failing probe logs a warning and this engine keeps the paged kernel rather than failing requests.
    An explicit "varlen" or "paged" is taken as given; on CPU "auto" is "paged" without a probe.
    """
    q_like = torch.empty(0, config.num_attention_heads, config.head_dim, dtype=dtype, device=device)
    path = kernels.prefill_attention_path(q_like, switches.prefill_attention)
    if switches.prefill_attention == "auto" and path == "varlen":
        failure = varlen_attention.probe_flash(config.num_attention_heads, config.num_key_value_heads,
                                               config.head_dim, dtype, device)
        if failure is not None:
            logger.warning("torch's flash varlen attention failed its start-up probe (%s): prefill steps without a "
                           "cached prefix take the paged kernel (set %s=paged to skip the probe)", failure,
                           kernels.PREFILL_PATH_ENV)
            path = "paged"
    return dataclasses.replace(switches, prefill_attention=path)
