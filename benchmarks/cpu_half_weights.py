"""A float32 CPU model's non-int4 GGUF matrices held in 16 bits: measured against the float32 they are held in today.

On a CPU without bfloat16 in hardware (AVX2) GGUF files run in float32, and `--quantization auto` repacks only the
4-bit matrices (velollm.kernels.int4_cpu): a Q4_K_M file's Q6_K tied embedding / lm_head and its Q6_K ffn_down and
attn_v layers are dequantized to 4 bytes a weight, 1.6 of the 2.2 GB a Llama-3.2-1B holds. torch has no CPU kernel
for Q6_K's per-16 scales (its int4 kernel takes groups of 32 and more, its int8 one one scale per output row), so
the one smaller exact-enough form is a 16-bit copy (bfloat16 or float16: the activations rounded to it on the way
in, as the int4 kernel already does), computed by torch's reduced-precision GEMV. This measures whether that pays:
  gemv    each Q6_K shape at batch 1 (lm_head 128256x2048, ffn_down 2048x8192, attn_v 512x2048), float32 /
          bfloat16 / float16 weights (and float16_large's) taking turns call by call: medians, and the float32 call over each 16-bit
          call of the same round
  decode  the Q4_K_M model loaded `auto` in float32 four times, its dense matrices left in float32 or cast to
          bfloat16 / float16 / float16 from 2^22 elements (float16_large: attn_v stays float32; the embedding
          itself stays float32: lookups are not timed), one decode step of each per round; tok/s from the
          median step, and the same round's float32 step over the variant's
The 16-bit variants run through a rebound `quantized_linear._matmul` (x cast to the weight's dtype and back): a
benchmark of a path the engine does not take.

Usage: python benchmarks/cpu_half_weights.py [--out DIR] [--new-tokens 32] [--threads N]
       python benchmarks/cpu_half_weights.py --layers 1 --vocab 4096 --new-tokens 4   (a quick smoke run)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_util import emit
from gguf_load import LLAMA_3_2_1B, quantize, write_f16

_PAIRED = """
import json, os, statistics, sys, time
import torch
import torch.nn.functional as F
from velollm import LLM, SamplingParams
from velollm.engine.models import quantized_linear
from velollm.kernels.int4_cpu import Int4Weight
path, new_tokens, threads, vocab_rows, hidden, inter, kv = sys.argv[1], *map(int, sys.argv[2:8])
if threads:
    torch.set_num_threads(threads)
VARIANTS = ("float32", "bfloat16", "float16", "float16_large")
LARGE = 1 << 22  # float16_large: only matrices of this many elements or more (attn_v's 1M stay float32)
dense_matmul = quantized_linear._matmul

def matmul(x, w, out=None, scratch=None):
    if isinstance(w, torch.Tensor) and w.dtype != x.dtype:
        y = F.linear(x.to(w.dtype), w).to(x.dtype)
        return y if out is None else out.copy_(y)
    return dense_matmul(x, w, out, scratch)

quantized_linear._matmul = matmul

def paired(times):
    base = times["float32"]
    return {v: dict(median_ms=round(statistics.median(t) * 1e3, 2), min_ms=round(min(t) * 1e3, 2),
                    float32_over_this=round(statistics.median([b / a for a, b in zip(t, base)]), 2),
                    range=[round(min(b / a for a, b in zip(t, base)), 2), round(max(b / a for a, b in zip(t, base)), 2)])
            for v, t in times.items()}

def half(variant, w):
    if variant == "float16_large":
        return torch.float16 if w.numel() >= LARGE else torch.float32
    return getattr(torch, variant)

gen = torch.Generator().manual_seed(0)
gemv = {}
for rows, cols in ((vocab_rows, hidden), (hidden, inter), (kv, hidden)):
    w32 = torch.randn(rows, cols, generator=gen) * 0.02
    weights = {v: w32.to(half(v, w32)) for v in VARIANTS}
    x = torch.randn(1, cols, generator=gen)
    times = {v: [] for v in VARIANTS}
    for _ in range(12):
        for v, w in weights.items():
            t = time.perf_counter(); matmul(x, w); times[v].append(time.perf_counter() - t)
    gemv[f"{rows}x{cols}"] = paired({v: t[2:] for v, t in times.items()})
    del weights, w32

engines, weight_bytes = {}, {}
for v in VARIANTS:
    llm = LLM(path, device="cpu", dtype="float32", quantization="auto", max_num_seqs=1, kv_cache_memory=256 * 2**20)
    held = 0
    for m in llm.engine.runner.model.modules():
        if isinstance(m, quantized_linear.QuantizedLinear):
            m.parts = [(o, w if isinstance(w, Int4Weight) or w.dim() != 2 else w.to(half(v, w)))
                       for o, w in m.parts]
            held += sum(w.nbytes if isinstance(w, Int4Weight) else w.numel() * w.element_size() for _, w in m.parts)
    engines[v], weight_bytes[v] = llm, held
prompt = torch.randint(3, 1000, (32,), generator=gen).tolist()
for llm in engines.values():
    llm.engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=new_tokens + 2, ignore_eos=True))
    llm.engine.step()
steps = {v: [] for v in VARIANTS}
for _ in range(new_tokens):
    for v, llm in engines.items():
        t = time.perf_counter(); llm.engine.step(); steps[v].append(time.perf_counter() - t)
print(json.dumps(dict(gemv=gemv, decode=paired(steps), linear_bytes=weight_bytes, threads=torch.get_num_threads())))
"""


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "velollm-cpu-quantized",
                        help="folder for the GGUF files (reused when present; benchmarks/cpu_quantized.py's)")
    parser.add_argument("--layers", type=int, default=LLAMA_3_2_1B["layers"])
    parser.add_argument("--vocab", type=int, default=LLAMA_3_2_1B["vocab"])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    shape = {**LLAMA_3_2_1B, "layers": args.layers, "vocab": args.vocab}
    args.out.mkdir(parents=True, exist_ok=True)
    tag = f"llama3.2-1b-shape-L{args.layers}-V{args.vocab}"
    path = args.out / f"{tag}-Q4_K_M.gguf"
    if not path.exists():
        base = args.out / f"{tag}-F16.gguf"
        if not base.exists():
            write_f16(base, shape)
        quantize(base, path, "Q4_K_M")
    kv_rows = shape["hidden"] // shape["heads"] * shape["kv_heads"]
    emit(what="cpu_box", cpus=os.cpu_count(), capability=torch.backends.cpu.get_cpu_capability(),
         load_avg=os.getloadavg())
    out = subprocess.run([sys.executable, "-c", _PAIRED, str(path), str(args.new_tokens), str(args.threads),
                          str(args.vocab), str(shape["hidden"]), str(shape["intermediate"]), str(kv_rows)],
                         check=False, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"child failed ({out.returncode}): {out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    for matrix, by_dtype in r["gemv"].items():
        for dtype, row in by_dtype.items():
            emit(what="half_gemv", matrix=matrix, weights=dtype, threads=r["threads"], **row)
    for dtype, row in r["decode"].items():
        emit(what="half_decode", quant="Q4_K_M", weights=dtype, threads=r["threads"],
             linear_weights_gb=round(r["linear_bytes"][dtype] / 1e9, 3),
             decode_tok_s=round(1e3 / row["median_ms"], 2), best_decode_tok_s=round(1e3 / row["min_ms"], 2),
             float32_step_over_this=row["float32_over_this"], range=row["range"], load_avg=os.getloadavg())


if __name__ == "__main__":
    main()
