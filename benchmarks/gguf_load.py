"""GGUF load time and peak RSS: VeloLLM (dequantized into the compute dtype, or kept quantized) beside llama.cpp.

Random weights of Llama-3.2-1B's shape are written once as F16 and quantized by llama.cpp's own
quantizer to each requested type (Q4_K_M, Q8_0). Each load runs in a fresh subprocess so that its
peak RSS is its own. Prints one JSON line per measurement (see bench_util.emit).

Usage: python benchmarks/gguf_load.py [--out DIR] [--types Q4_K_M Q8_0] [--dtype bfloat16] [--layers 16]
       (--layers 1 --vocab 4096 is a quick smoke run)
       python benchmarks/gguf_load.py --shape llama-3.1-8b --types Q4_K_M --device cuda --quantization gguf
       (issue 11: load time <= 1.5x llama.cpp's, VRAM for weights <= 1.1x the file's tensor bytes)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gguf_files import SHAPES, tensor_shapes, write_header, write_random_quantized

LLAMA_3_2_1B = SHAPES["llama-3.2-1b"]


def write_f16(path: Path, shape: dict) -> None:
    """Stream a random F16 llama GGUF (SentencePiece-style vocab, tied embeddings) to `path`."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    write_header(w, shape, 1)
    shapes = tensor_shapes(shape)
    for name, s in shapes.items():
        dtype = np.float32 if len(s) == 1 else np.float16
        w.add_tensor_info(name, s, np.dtype(dtype), int(np.prod(s)) * np.dtype(dtype).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    for name, s in shapes.items():
        if len(s) == 1:
            w.write_tensor_data(np.ones(s, dtype=np.float32))
        else:
            w.write_tensor_data((rng.standard_normal(s, dtype=np.float32) * 0.02).astype(np.float16))
    w.close()


def quantize(src: Path, dst: Path, ftype: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) != 0:
        raise RuntimeError(f"llama_model_quantize({ftype}) failed")


_VELOLLM = """
import json, resource, sys, time
import torch, gguf, tokenizers
import velollm.kernels  # triton: an import, excluded like the others
from velollm.engine.loader.resolve import resolve_model
from velollm.engine.loader.gguf_file import GGUFFile
device, quantization = sys.argv[3], sys.argv[4]
if device == "cuda":
    torch.cuda.init()
t0 = time.perf_counter()  # imports and CUDA start-up excluded, as llama.cpp's below
source = resolve_model(sys.argv[1], dtype=sys.argv[2], device=device, quantization=quantization)
weights = dict(source.iter_weights())
if device == "cuda":
    torch.cuda.synchronize()
seconds = time.perf_counter() - t0
with GGUFFile(sys.argv[1]) as f:
    tensor_bytes = sum(t.nbytes for t in f.tensors.values())
print(json.dumps({"seconds": seconds, "weight_bytes": sum(t.nbytes for t in weights.values()),
                  "tensor_bytes": tensor_bytes, "quantization": source.quantization,
                  "vram_bytes": torch.cuda.memory_allocated() if device == "cuda" else 0,
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""
_LLAMA_CPP = """
import json, resource, sys, time
import llama_cpp
t0 = time.perf_counter()
llm = llama_cpp.Llama(sys.argv[1], n_ctx=512, verbose=False)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def measure(script: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_util import emit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the GGUF files (reused when present)")
    parser.add_argument("--types", nargs="+", default=["Q4_K_M", "Q8_0"])
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--layers", type=int, default=LLAMA_3_2_1B["layers"])
    parser.add_argument("--vocab", type=int, default=LLAMA_3_2_1B["vocab"])
    parser.add_argument("--shape", choices=sorted(SHAPES),
                        help="a full model shape written as random blocks of llama.cpp's types (gguf_files.py) "
                             "instead of llama.cpp's quantizer on an F16 file: seconds instead of minutes")
    parser.add_argument("--device", default="cpu", help="where VeloLLM loads the weights (cuda: VRAM is measured)")
    parser.add_argument("--quantization", default="none", choices=["auto", "none", "gguf", "int4"],
                        help="int4 (auto on a CPU): what `velollm serve` does there")
    args = parser.parse_args()
    shape = {**LLAMA_3_2_1B, "layers": args.layers, "vocab": args.vocab}
    out = args.out or Path(tempfile.mkdtemp(prefix="gguf_load_"))
    out.mkdir(parents=True, exist_ok=True)
    tag = f"llama3.2-1b-shape-L{args.layers}-V{args.vocab}"
    base = out / f"{tag}-F16.gguf"
    for ftype in args.types:
        path = out / f"{tag}-{ftype}.gguf"
        if args.shape:
            path = write_random_quantized(out / f"{args.shape}-{ftype}.gguf", SHAPES[args.shape], ftype)
        elif not path.exists():
            if not base.exists():
                write_f16(base, shape)
            quantize(base, path, ftype)
        load_avg = os.getloadavg()[0]  # the box's load as this file's measurements begin (a shared CPU)
        ours = measure(_VELOLLM, str(path), args.dtype, args.device, args.quantization)
        theirs = measure(_LLAMA_CPP, str(path))
        emit(what="gguf_load", file=path.name, quant=ftype, file_gb=round(path.stat().st_size / 1e9, 3),
             dtype=args.dtype, device=args.device, quantization=ours["quantization"],
             velollm_s=round(ours["seconds"], 2), velollm_peak_rss_gb=round(ours["peak_rss"] / 1e9, 2),
             weights_gb=round(ours["weight_bytes"] / 1e9, 2),
             vram_over_tensor_bytes=round(ours["vram_bytes"] / ours["tensor_bytes"], 3) if ours["vram_bytes"] else None,
             load_over_llama_cpp=round(ours["seconds"] / theirs["seconds"], 2),
             velollm_dequant_gb_per_s=round(ours["weight_bytes"] / 1e9 / ours["seconds"], 2),
             llama_cpp_s=round(theirs["seconds"], 2), llama_cpp_peak_rss_gb=round(theirs["peak_rss"] / 1e9, 2),
             cpus=len(os.sched_getaffinity(0)), load_avg_1m=round(load_avg, 2))


if __name__ == "__main__":
    main()
