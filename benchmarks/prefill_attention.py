"""Paged prefill attention alone: 16 prompts of 512 tokens, plus 16 chunks of 256 after a 768-token cached
prefix, Llama-3.1-8B heads, bf16. Prints TFLOP/s beside torch SDPA (flash) on the same, unpaged, tensors.
For steps without a cached prefix it also prints one `prefill_attention_path` row per path the engine can
take (velollm.kernels.prefill_attention_path, $VELOLLM_PREFILL_ATTENTION): "varlen" (torch flash on the
step's packed k/v) and "paged" (the Triton kernel over the paged cache), and which one "auto" picks; the
same for 16 fresh prompts of mixed lengths (64 to 1,024 tokens) in one step.
Usage: python benchmarks/prefill_attention.py [--no-sweep]      (CPU dry run: TRITON_INTERPRET=1 ... --small)
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_util import SMALL_HELP, emit, kernel_device, time_cpu, time_cuda  # noqa: E402
from velollm import kernels  # noqa: E402
from velollm.kernels import prefill_attention as pa  # noqa: E402
from velollm.kernels import varlen_attention  # noqa: E402


def build(num_seqs: int, q_len: int, kv_len: int, hq: int, hkv: int, d: int, block_size: int, device: str):
    blocks_per_seq = -(-kv_len // block_size)
    num_blocks = num_seqs * blocks_per_seq + 1
    gen = torch.Generator().manual_seed(0)
    k_cache = torch.randn(num_blocks, block_size, hkv, d, generator=gen).to(device, torch.bfloat16)
    v_cache = torch.randn(num_blocks, block_size, hkv, d, generator=gen).to(device, torch.bfloat16)
    tables = (torch.randperm(num_blocks - 1, generator=gen)[: num_seqs * blocks_per_seq] + 1).view(num_seqs, -1)
    q = torch.randn(num_seqs * q_len, hq, d, generator=gen).to(device, torch.bfloat16)
    cu = torch.arange(0, num_seqs + 1, dtype=torch.int32, device=device) * q_len
    lens = torch.full((num_seqs,), kv_len, dtype=torch.int32, device=device)
    return q, k_cache, v_cache, tables.to(device, torch.int32), cu, lens


def sdpa_peer(q, k_cache, v_cache, tables, num_seqs, q_len, kv_len, hq, hkv, d):
    """Flash SDPA on contiguous K/V gathered once (gather not timed): the speed a dense kernel gets."""
    k = k_cache[tables.long()].flatten(1, 2)[:, :kv_len].transpose(1, 2)  # [S, Hkv, L, D]
    v = v_cache[tables.long()].flatten(1, 2)[:, :kv_len].transpose(1, 2)
    qd = q.view(num_seqs, q_len, hq, d).transpose(1, 2)
    # Bottom-right causal alignment (queries are the last q_len positions).
    q_pos = torch.arange(kv_len - q_len, kv_len, device=q.device)
    mask = torch.arange(kv_len, device=q.device)[None, :] <= q_pos[:, None]
    is_causal = q_len == kv_len
    if not is_causal:  # masked SDPA backends lack GQA: expand K/V once, outside the timing
        k, v = k.repeat_interleave(hq // hkv, dim=1), v.repeat_interleave(hq // hkv, dim=1)
    return lambda: F.scaled_dot_product_attention(qd, k, v, attn_mask=None if is_causal else mask,
                                                  is_causal=is_causal, enable_gqa=is_causal and hq != hkv)


def build_mixed(lengths: list[int], hq: int, hkv: int, d: int, block_size: int, device: str):
    """Fresh prompts of different lengths in one step (no cached prefix), as build() lays them out."""
    per_seq = [-(-n // block_size) for n in lengths]
    gen = torch.Generator().manual_seed(1)
    num_blocks = sum(per_seq) + 1
    k_cache = torch.randn(num_blocks, block_size, hkv, d, generator=gen).to(device, torch.bfloat16)
    v_cache = torch.randn(num_blocks, block_size, hkv, d, generator=gen).to(device, torch.bfloat16)
    order = (torch.randperm(num_blocks - 1, generator=gen) + 1).tolist()
    tables = torch.zeros(len(lengths), max(per_seq), dtype=torch.int32)
    for s, count in enumerate(per_seq):
        tables[s, :count] = torch.tensor([order.pop() for _ in range(count)], dtype=torch.int32)
    q = torch.randn(sum(lengths), hq, d, generator=gen).to(device, torch.bfloat16)
    cu = torch.tensor([0] + lengths).cumsum(0).to(device, torch.int32)
    lens = torch.tensor(lengths, dtype=torch.int32, device=device)
    return q, k_cache, v_cache, tables.to(device), cu, lens


def packed_kv(k_cache, v_cache, tables, lengths: list[int]):
    """The step's own k/v [sum(lengths), Hkv, D], as rope_and_cache hands them to the varlen path (untimed)."""
    gather = lambda cache: torch.cat([cache[tables[s].long()].flatten(0, 1)[:n] for s, n in enumerate(lengths)])
    return gather(k_cache), gather(v_cache)


def compare_paths(q, k_cache, v_cache, tables, cu, lens, d, flops, case, timer, want) -> bool:
    """One row per prefill path for a step without a cached prefix, timed alike (eager launches)."""
    lengths = lens.tolist()
    k, v = packed_kv(k_cache, v_cache, tables, lengths)
    longest = max(lengths)
    paths = {
        "varlen": lambda: kernels.varlen_prefill_attention(q, k, v, cu, longest, d ** -0.5),
        "paged": lambda: kernels.paged_prefill_attention(q, k_cache, v_cache, tables, cu, lens, d ** -0.5,
                                                         max_query_len=longest),
    }
    seconds, ok = {}, True
    # What an engine's start-up probe (velollm.engine.prefill_path) says of flash at these shapes.
    probe = "not run: no flash here"
    if varlen_attention.flash_supported(q):
        probe = varlen_attention.probe_flash(q.shape[1], k.shape[1], d, q.dtype, q.device) or "passed"
    for name, call in paths.items():
        err = (call().float() - want.float()).abs().max().item()
        ok &= err <= 3e-2
        seconds[name] = timer(call, use_graph=False)
    for name in paths:
        emit(what="prefill_attention_path", case=case, path=name, us=round(seconds[name] * 1e6, 1),
             TFLOPs=round(flops / seconds[name] / 1e12, 2), vs_paged=round(seconds["paged"] / seconds[name], 3),
             auto=kernels.prefill_attention_path(q), env=kernels.KernelSwitches.from_env().prefill_attention,
             probe=probe)
    return ok


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--small", action="store_true", help=SMALL_HELP)
    a = p.parse_args()
    device = kernel_device(a.small)
    if device is None:
        return 2
    hq, hkv, d = 32, 8, 128
    cases = [(2, 16, 16), (2, 8, 24)] if a.small else [(16, 512, 512), (16, 256, 1024)]
    ok = True
    for num_seqs, q_len, kv_len in cases:
        q, k_cache, v_cache, tables, cu, lens = build(num_seqs, q_len, kv_len, hq, hkv, d, 16, device)
        flops = 4 * d * hq * num_seqs * sum(kv_len - q_len + i + 1 for i in range(q_len))
        want = pa.paged_prefill_attention_ref(q, k_cache, v_cache, tables, cu, lens, d ** -0.5)
        out = torch.empty_like(q)
        configs = [dict()]
        if not a.no_sweep and not a.small:  # "default" is pa.prefill_tile's pick (its table: GPU_NOTES run 1)
            table = pa.prefill_tile(d, q_len)
            configs += [dict(block_m=m, block_n=n, num_warps=w)
                        for m, n, w in itertools.product((64, 128), (32, 64), (4, 8)) if (m, n, w) != table]
        timer = time_cuda if device == "cuda" else (lambda f, **_: time_cpu(f, repeats=1))
        best = None
        for cfg in configs:
            def call(cfg=cfg):
                return pa.paged_prefill_attention_triton(q, k_cache, v_cache, tables, cu, lens, d ** -0.5,
                                                         out=out, max_query_len=q_len, **cfg)
            call()
            err = (out.float() - want.float()).abs().max().item()
            ok &= err <= 3e-2
            seconds = timer(call, use_graph=False)
            emit(what="prefill_attention_cfg", case=f"{num_seqs}x{q_len}/{kv_len}", cfg=cfg or "default",
                 us=round(seconds * 1e6, 1), TFLOPs=round(flops / seconds / 1e12, 2), max_err=round(err, 4))
            best = min(best or (seconds, cfg), (seconds, cfg), key=lambda b: b[0])
            if cfg == {}:
                default_seconds = seconds
        peer = timer(sdpa_peer(q, k_cache, v_cache, tables, num_seqs, q_len, kv_len, hq, hkv, d), use_graph=False)
        emit(what="prefill_attention", case=f"{num_seqs}x{q_len}/{kv_len}",
             default_cfg="{block_m=%d,block_n=%d,num_warps=%d}" % pa.prefill_tile(d, q_len),
             TFLOPs=round(flops / default_seconds / 1e12, 2),
             sdpa_TFLOPs=round(flops / peer / 1e12, 2), vs_sdpa=round(peer / default_seconds, 3),
             best_cfg=best[1] or "default", best_TFLOPs=round(flops / best[0] / 1e12, 2))
        if q_len == kv_len:
            ok &= compare_paths(q, k_cache, v_cache, tables, cu, lens, d, flops, f"{num_seqs}x{q_len}/{kv_len}",
                                timer, want)
    # Fresh prompts of mixed lengths in one step, as a serving prefill packs them (64 to 1024 tokens).
    lengths = [5, 17, 9] if a.small else [64 * ((7 * i) % 16 + 1) for i in range(16)]
    q, k_cache, v_cache, tables, cu, lens = build_mixed(lengths, hq, hkv, d, 16, device)
    flops = 4 * d * hq * sum(n * (n + 1) // 2 for n in lengths)
    want = pa.paged_prefill_attention_ref(q, k_cache, v_cache, tables, cu, lens, d ** -0.5)
    ok &= compare_paths(q, k_cache, v_cache, tables, cu, lens, d, flops, f"{len(lengths)}xmixed{min(lengths)}-"
                        f"{max(lengths)}", time_cuda if device == "cuda" else (lambda f, **_: time_cpu(f, repeats=1)),
                        want)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
