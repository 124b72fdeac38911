"""Paged decode attention alone (issue 5): batch 64, context 2048, bf16, Llama-3.1-8B and 3.2-1B head shapes.

Prints achieved GB/s (K/V bytes read / kernel time) against the measured device-to-device copy bandwidth,
sweeps the kernel's tiling knobs, and checks the result against the torch reference. Target: >= 70 % of copy.
Usage: python benchmarks/decode_attention.py [--no-sweep]      (CPU dry run: TRITON_INTERPRET=1 ... --small)
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_util import SMALL_HELP, emit, kernel_device, time_cpu, time_cuda  # noqa: E402
from shapes import SHAPES as MODEL_SHAPES, copy_bandwidth  # noqa: E402
from velollm.kernels import decode_attention as da  # noqa: E402

TARGET = 0.70
SHAPES = {  # (Hq, Hkv, head_dim)
    name: (MODEL_SHAPES[name]["num_attention_heads"], MODEL_SHAPES[name]["num_key_value_heads"],
           MODEL_SHAPES[name]["head_dim"])
    for name in ("llama-3.1-8b", "llama-3.2-1b")
}


def build(batch: int, context: int, hq: int, hkv: int, head_dim: int, block_size: int, device: str):
    blocks_per_seq = -(-context // block_size)
    num_blocks = batch * blocks_per_seq + 1
    gen = torch.Generator(device="cpu").manual_seed(0)
    k_cache = torch.randn(num_blocks, block_size, hkv, head_dim, generator=gen).to(device, torch.bfloat16)
    v_cache = torch.randn(num_blocks, block_size, hkv, head_dim, generator=gen).to(device, torch.bfloat16)
    # Shuffled blocks, as a long-running server's allocator hands them out.
    tables = (torch.randperm(num_blocks - 1, generator=gen)[: batch * blocks_per_seq] + 1).view(batch, -1)
    q = torch.randn(batch, hq, head_dim, generator=gen).to(device, torch.bfloat16)
    lens = torch.full((batch,), context, dtype=torch.int32, device=device)
    return q, k_cache, v_cache, tables.to(device, torch.int32), lens


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--context", type=int, default=2048)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--small", action="store_true", help=SMALL_HELP)
    p.add_argument("--b1-only", action="store_true", help="only the batch-1 rows (split policy, fused merge)")
    a = p.parse_args()
    device = kernel_device(a.small)
    if device is None:
        return 2
    if a.b1_only:
        batch_one(a.block_size)
        return 0
    batch, context = (2, 40) if a.small else (a.batch, a.context)
    copy_bps = copy_bandwidth("cuda") if device == "cuda" else 20e9
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu-interpreter"
    emit(what="d2d_copy", GBps=round(copy_bps / 1e9, 1), gpu=gpu)
    ok = True
    for model, (hq, hkv, head_dim) in SHAPES.items():
        q, k_cache, v_cache, tables, lens = build(batch, context, hq, hkv, head_dim, a.block_size, device)
        scale = head_dim ** -0.5
        kv_bytes = 2 * batch * context * hkv * head_dim * k_cache.element_size()
        want = da.paged_decode_attention_ref(q, k_cache, v_cache, tables, lens, scale)
        out = torch.empty_like(q)
        configs = [dict()]
        if not a.no_sweep and not a.small:
            # Kept small: each config is one more compile inside gpu_check.sh's time budget.
            configs += [dict(num_splits=s, block_n=n) for s, n in itertools.product((1, 2, 4, 8), (32, 64))]
            configs += [dict(num_splits=s, block_n=n, num_warps=8) for s, n in ((2, 64), (4, 64), (4, 128))]
            configs += [dict(num_splits=4, block_n=64, num_stages=2), dict(num_splits=4, block_n=64, num_stages=4)]
        best = None
        for cfg in configs:
            def call(cfg=cfg):
                return da.paged_decode_attention_triton(q, k_cache, v_cache, tables, lens, scale, out=out, **cfg)
            call()
            err = (out.float() - want.float()).abs().max().item()
            seconds = time_cuda(call) if device == "cuda" else time_cpu(call, repeats=1)
            row = dict(what="decode_attention_cfg", model=model, cfg=cfg or "default", us=round(seconds * 1e6, 1),
                       GBps=round(kv_bytes / seconds / 1e9, 1), max_err=round(err, 4))
            emit(**row)
            if err > 3e-2:
                ok = False
            if best is None or seconds < best[0]:
                best = (seconds, cfg)
            if cfg == {}:
                default_seconds = seconds
        fraction = kv_bytes / default_seconds / copy_bps
        emit(what="decode_attention", model=model, batch=batch, context=context, dtype="bf16",
             GBps=round(kv_bytes / default_seconds / 1e9, 1), copy_GBps=round(copy_bps / 1e9, 1),
             fraction=round(fraction, 3), target=TARGET, met=fraction >= TARGET,
             best_cfg=best[1] or "default", best_fraction=round(kv_bytes / best[0] / copy_bps, 3), gpu=gpu)
        del q, k_cache, v_cache, want
        if device == "cuda":
            torch.cuda.empty_cache()
    if not a.small and not a.no_sweep:
        batch_one(a.block_size)
    return 0 if ok else 1


def batch_one(block_size: int) -> None:
    """Batch-1 decode as a CUDA graph runs it: a short context (384) in a table as wide as the graph's
    (8192 tokens), so the split count comes from the width. Kernel time per split policy (8B heads), and
    the split merge fused into the attention kernel ($VELOLLM_DECODE_FUSED_REDUCE=1, off by default: the
    engine turns it on where `fused_reduce` beats "default" here) for both shapes, contexts 384 and 2048."""
    for model in ("llama-3.1-8b", "llama-3.2-1b"):
        hq, hkv, head_dim = SHAPES[model]
        q, k_cache, v_cache, tables, lens = build(1, 8192, hq, hkv, head_dim, block_size, "cuda")
        out = torch.empty_like(q)
        want = {}
        for context in (384, 2048):
            lens.fill_(context)
            cfgs = [dict(), dict(fused_reduce=True)]
            if model == "llama-3.1-8b" and context == 384:
                cfgs += [dict(num_splits=16), dict(num_splits=4), dict(num_splits=1)]
            for cfg in cfgs:
                def call(cfg=cfg):
                    return da.paged_decode_attention_triton(q, k_cache, v_cache, tables, lens, head_dim ** -0.5,
                                                            out=out, **cfg)
                got = call().float()
                want.setdefault(context, got.clone())
                emit(what="decode_attention_b1_cfg", model=model, context=context, table_tokens=8192,
                     cfg=cfg or "default", us=round(time_cuda(call) * 1e6, 2),
                     max_diff_vs_default=round((got - want[context]).abs().max().item(), 4))


if __name__ == "__main__":
    sys.exit(main())
