"""Where a GGUF load's CPU time goes: each tensor computed as the loader does, on this thread with one torch thread,
the seconds summed per step (int4 repack of the 4-bit matrices, dequantization to the compute dtype per type, the
copy of float tensors). One JSON line per step (bench_util.emit), then the total.

Usage: python benchmarks/gguf_load_steps.py FILE.gguf [--dtype bfloat16] [--quantization int4|none]
       (a file from benchmarks/gguf_load.py --shape llama-3.2-1b --types Q4_K_M --out DIR)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from bench_util import emit

    from velollm.engine.loader.gguf_file import GGUFFile
    from velollm.engine.loader.gguf_jobs import FLOAT_VIEWS, dequantize_bytes
    from velollm.engine.loader.gguf_quantized import int4_tensor, map_bytes, stays_int4
    from velollm.engine.loader.source import TORCH_DTYPES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(TORCH_DTYPES))
    parser.add_argument("--quantization", default="int4", choices=["int4", "none"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    dtype = TORCH_DTYPES[args.dtype]
    seconds: Counter[str] = Counter()
    elements: Counter[str] = Counter()
    load_avg = os.getloadavg()[0]
    with GGUFFile(args.path) as f:
        for info in f.tensors.values():
            raw = map_bytes(f, info)
            t0 = time.perf_counter()
            if args.quantization == "int4" and stays_int4(info):
                int4_tensor(raw, info)
                step = f"int4 repack {info.type_name}"
            else:
                dequantize_bytes(raw, info, dtype).to(dtype, copy=info.type_name in FLOAT_VIEWS)
                step = f"{info.type_name} -> {args.dtype}" + (" (token_embd)" if info.name == "token_embd.weight" else "")
            seconds[step] += time.perf_counter() - t0
            elements[step] += info.num_elements
    for step in sorted(seconds, key=seconds.__getitem__, reverse=True):
        emit(what="gguf_load_step", file=args.path.name, step=step, seconds=round(seconds[step], 3),
             elements_m=round(elements[step] / 1e6, 1), m_elements_per_s=round(elements[step] / 1e6 / seconds[step]),
             threads=1, load_avg_1m=round(load_avg, 2))
    emit(what="gguf_load_step", file=args.path.name, step="total", seconds=round(sum(seconds.values()), 3),
         threads=1, load_avg_1m=round(load_avg, 2))


if __name__ == "__main__":
    main()
