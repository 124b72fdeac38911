"""Where the CPU int4 path should switch from torch's int4 kernel to dequantize + a dense GEMM.

For each 8B-like matrix shape [N, K] and each number of rows M of x (in the model's dtype: bfloat16 where
the CPU has it in hardware, float32 elsewhere), three ways to compute x @ W^T:
  int4      torch's _weight_int4pack_mm_for_cpu on the packed matrix (int4_cpu.int4_linear without a
            scratch: x rounded to bfloat16, the result cast back to the dtype)
  dequant   int4_unpack.dequantize_t into a reused buffer of the dtype, then the GEMM (what int4_linear
            runs from int4_cpu.prefill_rows(dtype) rows on)
  dense     F.linear on a resident copy in the dtype (the `--quantization none` path: no dequantization)
The three take turns within every repeat (the box is shared: a busy moment hits all three); medians in ms,
and the dequantization alone. The threads are torch's (all the machine has); every row carries the load.

Usage: python benchmarks/int4_prefill.py [--dtype float32] [--shapes 4096x4096 14336x4096] [--rows 1 8 16 ...]
       [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_util import emit

ROWS = [1, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512]


def packed_matrix(rows: int, cols: int):
    from velollm.kernels.int4_cpu import GROUP, Int4Weight

    gen = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (rows, cols), generator=gen, dtype=torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    sz = (torch.randn(cols // GROUP, rows, 2, generator=gen) * 0.01).to(torch.bfloat16)
    return Int4Weight((rows, cols), packed, sz)


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    from velollm.hw.cpu_features import default_cpu_dtype, has_native_bf16
    from velollm.hw.torch_threads import one_intra_op_thread
    from velollm.kernels import int4_cpu, int4_unpack

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["4096x4096", "14336x4096"], help="N x K (out x in)")
    parser.add_argument("--rows", nargs="+", type=int, default=ROWS)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default=default_cpu_dtype(),
                        help="the model's dtype (default: this CPU's for GGUF files)")
    args = parser.parse_args()
    if not int4_unpack.supported():
        sys.exit("this torch / CPU packs int4 differently: int4_linear keeps the int4 kernel at every size")
    dtype = getattr(torch, args.dtype)
    emit(what="int4_prefill_box", cpus=os.cpu_count(), threads=torch.get_num_threads(),
         capability=torch.backends.cpu.get_cpu_capability(), native_bf16=has_native_bf16(), dtype=args.dtype,
         prefill_rows=int4_cpu.prefill_rows(dtype), load_avg=os.getloadavg())
    scratch = int4_unpack.Int4Scratch(one_intra_op_thread(), dtype)  # as the engine's models dequantize (one thread)
    for shape in args.shapes:
        n, k = map(int, shape.split("x"))
        w = packed_matrix(n, k)
        dense = int4_unpack.dequantize_t(w, int4_unpack.Int4Scratch(dtype=dtype)).T.contiguous()
        for m in args.rows:
            x = torch.randn(m, k).to(dtype)
            ways = {
                "int4": lambda: int4_cpu.int4_linear(x, w),
                "dequant": lambda: x @ int4_unpack.dequantize_t(w, scratch),
                "dense": lambda: F.linear(x, dense),
                "dequant_only": lambda: int4_unpack.dequantize_t(w, scratch),
            }
            times: dict[str, list[float]] = {name: [] for name in ways}
            for rep in range(args.repeats + 1):
                for name, fn in ways.items():
                    t = seconds(fn)
                    if rep:  # the first round warms up
                        times[name].append(t)
            ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
            emit(what="int4_prefill", dtype=args.dtype, n=n, k=k, rows=m, int4_ms=round(ms["int4"], 2),
                 dequant_gemm_ms=round(ms["dequant"], 2), dense_ms=round(ms["dense"], 2),
                 dequant_only_ms=round(ms["dequant_only"], 2),
                 faster="dequant" if ms["dequant"] < ms["int4"] else "int4", load_avg=os.getloadavg())


if __name__ == "__main__":
    main()
