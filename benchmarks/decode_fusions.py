"""Batch-1 decode fusions behind switches (issue 18), each beside the unfused default it would replace:

- `decode_attention_b1_cfg` rows: decode attention as the batch-1 graph runs it (64 splits of an
  8192-token table), split merge in a second kernel ("default") vs fused into the split kernel
  (`fused_reduce`, $VELOLLM_DECODE_FUSED_REDUCE=1), 8B and 1B heads, contexts 384 and 2048.
- `silu_down_gemv` rows: the MLP tail, silu_and_mul (Triton) + cuBLAS down projection vs the fused Triton
  GEMV ($VELOLLM_SILU_DOWN_GEMV=1) with a small tile sweep, 1B and 8B shapes, 1 and 4 rows, bf16; GB/s of
  the weight read against the measured copy bandwidth.

Every time is a CUDA graph of 10 calls (launch gaps as the decode graph has them). A switch is worth
turning on by default where its row beats the unfused one on both shapes.
Usage: python benchmarks/decode_fusions.py        (CPU dry run: TRITON_INTERPRET=1 ... --small)
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_util import SMALL_HELP, emit, kernel_device, time_cpu, time_cuda  # noqa: E402
from shapes import SHAPES, copy_bandwidth  # noqa: E402
from velollm.kernels import activation, silu_gemv  # noqa: E402

SILU_CONFIGS = [dict(), dict(block_n=8), dict(block_k=1024), dict(block_n=8, block_k=256), dict(block_n=2, block_k=1024),
                dict(num_warps=8), dict(block_n=8, num_warps=8)]


def silu_down(device: str, small: bool) -> bool:
    timer = time_cuda if device == "cuda" else (lambda f, **_: time_cpu(f, repeats=1))
    copy_bps = copy_bandwidth("cuda") if device == "cuda" else 20e9
    shapes = {"tiny": (64, 256)} if small else {
        name: (SHAPES[name]["hidden_size"], SHAPES[name]["intermediate_size"]) for name in ("llama-3.2-1b", "llama-3.1-8b")}
    ok = True
    for name, (hidden, inter) in shapes.items():
        gen = torch.Generator().manual_seed(0)
        w = (torch.randn(hidden, inter, generator=gen) / inter ** 0.5).to(device, torch.bfloat16)
        weight_bytes = w.numel() * w.element_size()
        for rows in (1, 4):
            x = torch.randn(rows, 2 * inter, generator=gen).to(device, torch.bfloat16)
            act = activation.silu_and_mul_triton if device == "cuda" else activation.silu_and_mul_ref
            unfused = lambda: F.linear(act(x), w)
            want = unfused().float()
            base = timer(unfused)
            emit(what="silu_down_gemv", shape=name, rows=rows, path="silu_and_mul+cuBLAS", us=round(base * 1e6, 2),
                 GBps=round(weight_bytes / base / 1e9, 1), copy_fraction=round(weight_bytes / base / copy_bps, 3))
            for cfg in SILU_CONFIGS[:1] if small else SILU_CONFIGS:
                def fused(cfg=cfg):
                    return silu_gemv.silu_mul_gemv_triton(x, w, **cfg)
                err = (fused().float() - want).abs().max().item()
                ok &= err <= 5e-2
                seconds = timer(fused)
                emit(what="silu_down_gemv", shape=name, rows=rows, path="fused", cfg=cfg or "default",
                     us=round(seconds * 1e6, 2), GBps=round(weight_bytes / seconds / 1e9, 1),
                     copy_fraction=round(weight_bytes / seconds / copy_bps, 3), vs_unfused=round(base / seconds, 3),
                     max_err=round(err, 4))
    return ok


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--small", action="store_true", help=SMALL_HELP)
    a = p.parse_args()
    device = kernel_device(a.small)
    if device is None:
        return 2
    if device == "cuda":
        import decode_attention

        decode_attention.batch_one(16)
    return 0 if silu_down(device, a.small) else 1


if __name__ == "__main__":
    sys.exit(main())
