"""GGUF load time and peak RSS: VeloLLM (dequantize into the compute dtype) beside llama.cpp.

Random weights of Llama-3.2-1B's shape are written once as F16 and quantized by llama.cpp's own
quantizer to each requested type (Q4_K_M, Q8_0). Each load runs in a fresh subprocess so that its
peak RSS is its own. Prints one JSON line per measurement (see bench_util.emit).

Usage: python benchmarks/gguf_load.py [--out DIR] [--types Q4_K_M Q8_0] [--dtype bfloat16] [--layers 16]
       (--layers 1 --vocab 4096 is a quick smoke run)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

LLAMA_3_2_1B = dict(hidden=2048, layers=16, heads=32, kv_heads=8, intermediate=8192, vocab=128256,
                    rope_theta=500000.0, context=131072)


def write_f16(path: Path, shape: dict) -> None:
    """Stream a random F16 llama GGUF (SentencePiece-style vocab, tied embeddings) to `path`."""
    import gguf

    h, n_layers, vocab = shape["hidden"], shape["layers"], shape["vocab"]
    head_dim = h // shape["heads"]
    kv = shape["kv_heads"] * head_dim
    w = gguf.GGUFWriter(str(path), "llama")
    for key, value in (("context_length", shape["context"]), ("embedding_length", h), ("block_count", n_layers),
                       ("feed_forward_length", shape["intermediate"]), ("attention.head_count", shape["heads"]),
                       ("attention.head_count_kv", shape["kv_heads"]), ("rope.dimension_count", head_dim)):
        w.add_uint32(f"llama.{key}", value)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_float32("llama.rope.freq_base", shape["rope_theta"])
    w.add_file_type(1)
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))]
    tokens += [f"▁w{i}" for i in range(vocab - len(tokens))]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([-float(i) for i in range(vocab)])
    w.add_token_types([2, 3, 3, *([6] * 256), *([1] * (vocab - 259))])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    shapes = {"token_embd.weight": (vocab, h), "output_norm.weight": (h,)}
    for i in range(n_layers):
        shapes |= {f"blk.{i}.attn_norm.weight": (h,), f"blk.{i}.ffn_norm.weight": (h,),
                   f"blk.{i}.attn_q.weight": (h, h), f"blk.{i}.attn_k.weight": (kv, h),
                   f"blk.{i}.attn_v.weight": (kv, h), f"blk.{i}.attn_output.weight": (h, h),
                   f"blk.{i}.ffn_gate.weight": (shape["intermediate"], h), f"blk.{i}.ffn_up.weight": (shape["intermediate"], h),
                   f"blk.{i}.ffn_down.weight": (h, shape["intermediate"])}
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
from velollm.engine.loader.resolve import resolve_model
t0 = time.perf_counter()  # imports excluded, as llama.cpp's below
source = resolve_model(sys.argv[1], dtype=sys.argv[2], device="cpu")
weights = dict(source.iter_weights())
seconds = time.perf_counter() - t0
nbytes = sum(t.numel() * t.element_size() for t in weights.values())
print(json.dumps({"seconds": seconds, "weight_bytes": nbytes,
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
    args = parser.parse_args()
    shape = {**LLAMA_3_2_1B, "layers": args.layers, "vocab": args.vocab}
    out = args.out or Path(tempfile.mkdtemp(prefix="gguf_load_"))
    out.mkdir(parents=True, exist_ok=True)
    tag = f"llama3.2-1b-shape-L{args.layers}-V{args.vocab}"
    base = out / f"{tag}-F16.gguf"
    for ftype in args.types:
        path = out / f"{tag}-{ftype}.gguf"
        if not path.exists():
            if not base.exists():
                write_f16(base, shape)
            quantize(base, path, ftype)
        ours = measure(_VELOLLM, str(path), args.dtype)
        theirs = measure(_LLAMA_CPP, str(path))
        emit(what="gguf_load", file=path.name, quant=ftype, file_gb=round(path.stat().st_size / 1e9, 3),
             dtype=args.dtype, velollm_s=round(ours["seconds"], 2), velollm_peak_rss_gb=round(ours["peak_rss"] / 1e9, 2),
             weights_gb=round(ours["weight_bytes"] / 1e9, 2),
             velollm_dequant_gb_per_s=round(ours["weight_bytes"] / 1e9 / ours["seconds"], 2),
             llama_cpp_s=round(theirs["seconds"], 2), llama_cpp_peak_rss_gb=round(theirs["peak_rss"] / 1e9, 2))


if __name__ == "__main__":
    main()
