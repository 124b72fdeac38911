"""GGUF kept quantized vs dequantized to bfloat16, same file, same run (issue 11's speed targets).

For each shape and file type (random blocks of llama.cpp's per-tensor types, gguf_files.py):
  decode      batch-1 decode: tok/s, the fraction of the roofline computed on the bytes the weights take
              as held (quantized planes vs bfloat16), and quantized / bfloat16; llama.cpp beside them
              when its build offloads to the GPU
  throughput  N concurrent requests (default 64 and 256): output tok/s quantized / bfloat16
Targets (issue 11), printed as pass/fail rows: 8B Q4_K_M decode >= 2.0x bfloat16 (stretch 2.5x), Q8_0
>= 1.6x; throughput >= 0.9x.

Usage: python benchmarks/gguf_quantized.py                       # 8B and 3B Q4_K_M, 8B Q8_0, on CUDA
       python benchmarks/gguf_quantized.py --quick               # CPU dry run on a small shape (< 2 min)
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_util import emit
from gguf_files import SHAPES, write_random_quantized
from gpu_decode import make_prompt, run_velollm
from shapes import copy_bandwidth
from throughput import make_prompts
from throughput import run_velollm as run_throughput

QUICK_SHAPE = dict(hidden=256, layers=2, heads=4, kv_heads=2, intermediate=512, vocab=1024, rope_theta=10000.0,
                   context=2048, tied=False)
DECODE_TARGETS = {("llama-3.1-8b", "Q4_K_M"): 2.0, ("llama-3.1-8b", "Q8_0"): 1.6}
THROUGHPUT_TARGET = 0.9


def llama_cpp_decode(path: Path, prompt: list[int], new_tokens: int) -> dict | None:
    """llama.cpp's batch-1 decode with every layer on the GPU, or None when its build cannot offload."""
    try:
        import llama_cpp
    except ImportError:
        return None
    if not llama_cpp.llama_supports_gpu_offload():
        return None
    llm = llama_cpp.Llama(str(path), n_gpu_layers=-1, n_ctx=len(prompt) + new_tokens + 8, verbose=False)
    llm.eval(prompt[:-1])
    start = time.perf_counter()
    token = prompt[-1]
    for _ in range(new_tokens):
        llm.eval([token])
        token = int(llm.scores[llm.n_tokens - 1].argmax())
    seconds = time.perf_counter() - start
    del llm
    gc.collect()
    return dict(tok_s=round(new_tokens / seconds, 1))


def decode_rows(name: str, ftype: str, path: Path, args: argparse.Namespace, bandwidth: float) -> None:
    prompt = make_prompt(args.prompt_len, 1000)
    rows = {}
    for quantization in ("gguf", "none"):
        r = run_velollm(path, prompt, args.new_tokens, args.device, args.dtype, bandwidth, False, quantization)
        rows[quantization] = r
        emit(what="gguf_decode", shape=name, quant=ftype, path="quantized" if quantization == "gguf" else args.dtype,
             weight_gb=round(r["weight_bytes"] / 1e9, 3), decode_tok_s=r["decode_tok_s"],
             decode_frac_roofline=r["decode_frac_roofline"], tok_s=r["tok_s"], ttft_ms=r["ttft_ms"],
             matmul=r["paths"]["matmul"], graph_replays=r["paths"]["graph_replays"])
    ratio = rows["gguf"]["decode_tok_s"] / rows["none"]["decode_tok_s"]
    target = DECODE_TARGETS.get((name, ftype))
    peer = llama_cpp_decode(path, prompt, args.new_tokens) if args.device == "cuda" else None
    emit(what="gguf_decode_ratio", shape=name, quant=ftype, quantized_over_bf16=round(ratio, 2), target=target,
         passed=None if target is None else ratio >= target,
         same_tokens=rows["gguf"]["token_ids"] == rows["none"]["token_ids"],
         llama_cpp_tok_s=peer["tok_s"] if peer else "unavailable (no GPU offload in this llama.cpp build)",
         bandwidth_gb_s=round(bandwidth / 1e9, 1))


def throughput_rows(name: str, ftype: str, path: Path, args: argparse.Namespace) -> None:
    for concurrency in args.concurrency:
        prompts = make_prompts(concurrency, 64, 512, 1000)
        rates = {}
        for quantization in ("gguf", "none"):
            r = run_throughput(path, prompts, args.output_len, args.device, args.dtype, quantization,
                               max_num_seqs=concurrency)
            rates[quantization] = r["out_tokens"] / r["seconds"]
            emit(what="gguf_throughput", shape=name, quant=ftype, concurrency=concurrency, path=quantization,
                 out_tok_s=round(rates[quantization], 1), matmul=r["paths"]["matmul"])
        ratio = rates["gguf"] / rates["none"]
        emit(what="gguf_throughput_ratio", shape=name, quant=ftype, concurrency=concurrency,
             quantized_over_bf16=round(ratio, 2), target=THROUGHPUT_TARGET, passed=ratio >= THROUGHPUT_TARGET)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", help="SHAPE:FTYPE, repeatable (default: 8B and 3B Q4_K_M, 8B Q8_0)")
    parser.add_argument("--steps", nargs="+", default=["decode", "throughput"], choices=["decode", "throughput"])
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "velollm-bench")
    parser.add_argument("--quick", action="store_true", help="CPU dry run: a small shape, float32, few tokens")
    args = parser.parse_args()
    cases = args.case or ["llama-3.1-8b:Q4_K_M", "llama-3.2-3b:Q4_K_M", "llama-3.1-8b:Q8_0"]
    if args.quick:
        SHAPES["quick"] = QUICK_SHAPE
        cases, args.device, args.dtype = ["quick:Q4_K_M", "quick:Q8_0"], "cpu", "float32"
        args.new_tokens, args.prompt_len, args.concurrency, args.output_len = 8, 16, [4], 8
    args.workdir.mkdir(parents=True, exist_ok=True)
    bandwidth = copy_bandwidth(args.device)
    for case in cases:
        name, ftype = case.split(":")
        start = time.perf_counter()
        path = write_random_quantized(args.workdir / f"{name}-{ftype}.gguf", SHAPES[name], ftype)
        emit(what="gguf_file", shape=name, quant=ftype, file_gb=round(path.stat().st_size / 1e9, 3),
             seconds=round(time.perf_counter() - start, 1))
        if "decode" in args.steps:
            decode_rows(name, ftype, path, args, bandwidth)
        if "throughput" in args.steps:
            throughput_rows(name, ftype, path, args)


if __name__ == "__main__":
    main()
