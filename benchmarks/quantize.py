"""`ollama create -q` without Ollama: VeloLLM's numpy quantizer beside llama.cpp's, same F16 file, same box.

Random weights of Llama-3.2-1B's shape (16 layers, a tied 128256 x 2048 embedding: 1.24 B weights, 2.5 GB of
F16) are quantized to each level by velollm.engine.loader.gguf_requantize (numpy, on each of `--workers`
thread counts) and by llama.cpp's `llama_model_quantize` (C, `--threads` threads), one after the other, and
each VeloLLM file is compared with llama.cpp's tensor by tensor (types and bytes). One row per engine, thread
count and level: seconds, CPU seconds (all threads), F16 MB/s in, the load average around it (the box is
shared: where other jobs hold the cores, the CPU seconds say what a quantization costs and the wall time what
share it got).

Usage: python benchmarks/quantize.py [--out DIR] [--levels Q4_K_M Q4_K_S] [--threads 2] [--workers 1 2]
       python benchmarks/quantize.py --layers 1 --vocab 4096   (a quick smoke run)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_util import emit
from gguf_load import LLAMA_3_2_1B, write_f16


def llama_cpp_quantize(src: Path, dst: Path, level: str, threads: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{level}")
    params.nthread = threads
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) != 0:
        raise RuntimeError(f"llama_model_quantize({level}) failed")


def _cpu_seconds() -> float:
    """This process's CPU time, all threads (llama.cpp's quantizer runs in it too): the work done, whatever share
    of the shared box's cores it got."""
    t = os.times()
    return t.user + t.system


def same_tensors(a: Path, b: Path) -> tuple[int, list[str]]:
    """(tensors compared, names whose type or bytes differ)."""
    import gguf

    theirs = {t.name: t for t in gguf.GGUFReader(b).tensors}
    ours = gguf.GGUFReader(a).tensors
    differ = [t.name for t in ours if t.name not in theirs or t.tensor_type != theirs[t.name].tensor_type
              or not np.array_equal(np.asarray(t.data).view(np.uint8), np.asarray(theirs[t.name].data).view(np.uint8))]
    return len(ours), differ + sorted(set(theirs) - {t.name for t in ours})


def main() -> None:
    from velollm.engine.loader.gguf_requantize import requantize

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "velollm-quantize",
                        help="folder for the GGUF files (the F16 source is reused when present)")
    parser.add_argument("--levels", nargs="+", default=["Q4_K_M"])
    parser.add_argument("--layers", type=int, default=LLAMA_3_2_1B["layers"])
    parser.add_argument("--vocab", type=int, default=LLAMA_3_2_1B["vocab"])
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp's quantize threads")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="VeloLLM's thread counts")
    args = parser.parse_args()
    shape = {**LLAMA_3_2_1B, "layers": args.layers, "vocab": args.vocab}
    args.out.mkdir(parents=True, exist_ok=True)
    source = args.out / f"llama3.2-1b-shape-L{args.layers}-V{args.vocab}-F16.gguf"
    if not source.exists():
        write_f16(source, shape)
    size = source.stat().st_size
    emit(what="quantize_box", cpus=os.cpu_count(), source_gb=round(size / 1e9, 2), load_avg=os.getloadavg())
    for level in args.levels:
        runs = [("velollm", n) for n in args.workers] + [("llama.cpp", args.threads)]
        files = {}
        for engine, threads in runs:
            files[engine, threads] = args.out / f"{source.stem}-{level}-{engine}-{threads}-{os.getpid()}.gguf"
            load, cpu = os.getloadavg(), _cpu_seconds()
            start = time.perf_counter()
            if engine == "velollm":
                requantize(source, files[engine, threads], level, workers=threads)
            else:
                llama_cpp_quantize(source, files[engine, threads], level, threads)
            seconds = time.perf_counter() - start
            emit(what="quantize", level=level, engine=engine, threads=threads, seconds=round(seconds, 1),
                 cpu_seconds=round(_cpu_seconds() - cpu, 1), f16_mb_s=round(size / seconds / 1e6, 1),
                 load_avg_before=load, load_avg_after=os.getloadavg())
        theirs = files["llama.cpp", args.threads]
        for threads in args.workers:
            compared, differ = same_tensors(files["velollm", threads], theirs)
            emit(what="quantize_match", level=level, threads=threads, tensors=compared, differing=differ[:10])
        for path in files.values():
            path.unlink()

if __name__ == "__main__":
    main()
