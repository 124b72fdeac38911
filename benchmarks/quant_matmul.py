"""Quantized GEMV/GEMM kernels alone on Llama-3.1-8B's projection shapes: the sweep behind the dispatch rule.

For each GGUF type and M (rows of activations): the GEMV (M <= 8) and the GEMM, each in GB/s of weight
bytes read and TFLOP/s, beside cuBLAS on the same weight in bfloat16 (the dequantize-at-load path) and
the large-M alternative (dequantize the layer into a bfloat16 scratch, then cuBLAS).
Then a small tile sweep of each kernel at M = 1 and M = 256 (rows ending in _cfg: in the logs and
results.jsonl, not in gpu_check's table). Rows "quant_dispatch" print, per type,
the largest M where the GEMV beats the GEMM: kernels.quantized_linear switches at quant_gemv.MAX_ROWS.

Usage: python benchmarks/quant_matmul.py [--types Q4_K Q6_K Q8_0 Q4_0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_util import emit, time_cuda

from velollm.kernels.gguf_planes import QUANT_TYPES, dequantize_weight, split_planes
from velollm.kernels.quant_gemm import quant_gemm_triton
from velollm.kernels.quant_gemv import MAX_ROWS, quant_gemv_triton
from velollm.kernels.quant_rows import dequantize_rows_triton

SHAPES = {"qkv": (6144, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}
ROWS = [1, 2, 4, 8, 16, 32, 64, 256]


def random_weight(qtype: str, n: int, k: int):
    spec = QUANT_TYPES[qtype]
    raw = torch.randint(0, 256, (n * k // spec.block, spec.type_size), dtype=torch.uint8, device="cuda")
    for _, at, width, dtype in spec.planes:
        if dtype == torch.float16:
            raw[:, at + 1:at + width:2] = 0x04  # finite scales
    return split_planes(raw, qtype, (n, k))


def sweep_type(qtype: str) -> None:
    crossover = {}
    for shape, (n, k) in SHAPES.items():
        w = random_weight(qtype, n, k)
        dense = dequantize_weight(w, torch.bfloat16)
        all_rows = torch.arange(n, device="cuda")
        best_gemv_at = 0
        for m in ROWS:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            times = {"gemm": time_cuda(lambda: quant_gemm_triton(x, w)),
                     "cublas_bf16": time_cuda(lambda: x @ dense.T),
                     # the alternative at large M: dequantize the layer into a bfloat16 scratch, then cuBLAS
                     "dequant_cublas": time_cuda(lambda: x @ dequantize_rows_triton(all_rows, w, torch.bfloat16).T)}
            if m <= MAX_ROWS:
                times["gemv"] = time_cuda(lambda: quant_gemv_triton(x, w))
                best_gemv_at = m if times["gemv"] < times["gemm"] else best_gemv_at
            for kernel, seconds in times.items():
                nbytes = dense.numel() * 2 if kernel == "cublas_bf16" else w.nbytes
                emit(what="quant_matmul" if m in (1, 256) else "quant_matmul_cfg", qtype=qtype, shape=shape, n=n, k=k, m=m, kernel=kernel,
                     us=round(seconds * 1e6, 1), gb_s=round(nbytes / seconds / 1e9, 1),
                     tflop_s=round(2 * m * n * k / seconds / 1e12, 2))
        crossover[shape] = best_gemv_at
        tile_sweep(qtype, shape, w, k)
    emit(what="quant_dispatch", qtype=qtype, gemv_wins_up_to_rows=crossover, current_max_rows=MAX_ROWS)


def tile_sweep(qtype: str, shape: str, w, k: int) -> None:
    x1 = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    for block_n in (8, 16, 32):
        for block_b in (128, 256, 512):
            seconds = time_cuda(lambda: quant_gemv_triton(x1, w, block_n=block_n, block_b=block_b))
            emit(what="quant_tiles_cfg", kernel="gemv", qtype=qtype, shape=shape, block_n=block_n, block_b=block_b,
                 us=round(seconds * 1e6, 1), gb_s=round(w.nbytes / seconds / 1e9, 1))
    x = torch.randn(256, k, device="cuda", dtype=torch.bfloat16)
    for block_n, block_b, warps in ((64, 32, 4), (128, 32, 4), (64, 64, 4), (128, 64, 8)):
        seconds = time_cuda(lambda: quant_gemm_triton(x, w, block_m=64, block_n=block_n, block_b=block_b,
                                                      num_warps=warps))
        emit(what="quant_tiles_cfg", kernel="gemm", qtype=qtype, shape=shape, block_n=block_n, block_b=block_b,
             num_warps=warps, us=round(seconds * 1e6, 1), tflop_s=round(2 * 256 * w.shape[0] * k / seconds / 1e12, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", nargs="+", default=["Q4_K", "Q6_K", "Q8_0", "Q4_0"], choices=sorted(QUANT_TYPES))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("quant_matmul.py needs a CUDA GPU")
    for qtype in args.types:
        sweep_type(qtype)


if __name__ == "__main__":
    main()
