"""GGUF 4-bit models on the CPU: VeloLLM's int4 path, its dequantized (bfloat16) path and llama.cpp, same run.

Random weights of Llama-3.2-1B's shape are written once as F16 and quantized by llama.cpp's own quantizer
to each type (Q4_K_M: Q4_K with Q6_K attn_v / ffn_down in some layers and a Q6_K tied embedding; Q4_0).
Each engine runs in its own subprocess (its resident memory is its own), one request at a time:
  prefill  a PROMPT_LEN-token prompt (M = 256 rows per matmul): tok/s
  decode   batch 1, NEW_TOKENS tokens: tok/s from the median step, and the roofline it sits under: the
           measured copy bandwidth over the bytes one token reads (the weights as held: int4 planes plus the
           dequantized rest, all bfloat16, or the file's tensors for llama.cpp)
  lm_head  the median time of the (tied, bfloat16) lm_head at batch 1 against the decode step
  rss      resident memory after the run, and the peak
Each engine runs --repeats times, interleaved; the medians are printed with every run's decode rate.
`--quantization auto` takes the int4 path on a bfloat16 CPU model (velollm/engine/loader/gguf_quantized.py);
the `decision` row says whether it measured faster. The box is shared: every row carries the load average.

Usage: python benchmarks/cpu_quantized.py [--out DIR] [--types Q4_K_M Q4_0] [--prompt-len 256] [--new-tokens 32]
       python benchmarks/cpu_quantized.py --layers 1 --vocab 4096 --new-tokens 8   (a quick smoke run)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_util import emit
from gguf_load import LLAMA_3_2_1B, quantize, write_f16

_VELOLLM = """
import json, resource, statistics, sys, time
import psutil, torch
from velollm import LLM, SamplingParams
path, quantization, prompt_len, new_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
llm = LLM(path, device="cpu", dtype="bfloat16", quantization=quantization, max_num_seqs=1,
          kv_cache_memory=256 * 2**20)
engine, runner = llm.engine, llm.engine.runner
vocab = runner.config.vocab_size
prompt = torch.randint(3, vocab, (prompt_len,), generator=torch.Generator().manual_seed(0)).tolist()
llm.generate([prompt[:16]], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))  # warm-up
engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True))
stamps, token_ids = [time.perf_counter()], []
while engine.has_unfinished_requests():
    for delta in engine.step():
        token_ids += delta.token_ids
    stamps.append(time.perf_counter())
steps = [b - a for a, b in zip(stamps[1:], stamps[2:])]
x = torch.randn(1, runner.config.hidden_size, dtype=torch.bfloat16)
head = []
with torch.no_grad():
    for _ in range(12):
        t = time.perf_counter(); runner.model.lm_head(x); head.append(time.perf_counter() - t)
print(json.dumps({"quantization": runner.quantization, "weight_bytes": runner.weight_bytes,
                  "prefill_s": stamps[1] - stamps[0], "decode_step_s": statistics.median(steps),
                  "lm_head_s": statistics.median(head[2:]), "token_ids": token_ids[:8],
                  "matmul": runner.paths()["matmul"], "rss": psutil.Process().memory_info().rss,
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""
_LLAMA_CPP = """
import json, resource, statistics, sys, time
import numpy as np, psutil
import llama_cpp
path, prompt_len, new_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
n_ctx = prompt_len + new_tokens + 16  # scores has n_batch rows, indexed by position
llm = llama_cpp.Llama(path, n_ctx=n_ctx, n_batch=n_ctx, n_threads=2, verbose=False)
prompt = np.random.default_rng(0).integers(3, llm.n_vocab(), prompt_len).tolist()
llm.eval(prompt[:16]); llm.reset()  # warm-up
t = time.perf_counter(); llm.eval(prompt); prefill = time.perf_counter() - t
token, steps = int(llm.scores[llm.n_tokens - 1].argmax()), []
for _ in range(new_tokens - 1):
    t = time.perf_counter(); llm.eval([token]); steps.append(time.perf_counter() - t)
    token = int(llm.scores[llm.n_tokens - 1].argmax())
print(json.dumps({"prefill_s": prefill, "decode_step_s": statistics.median(steps),
                  "rss": psutil.Process().memory_info().rss,
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def measure(script: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"child failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def tensor_bytes(path: Path) -> int:
    from velollm.engine.loader.gguf_file import GGUFFile

    with GGUFFile(path) as f:
        return sum(t.nbytes for t in f.tensors.values())


def main() -> None:
    from velollm.hw.bandwidth import copy_bandwidth

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "velollm-cpu-quantized",
                        help="folder for the GGUF files (reused when present)")
    parser.add_argument("--types", nargs="+", default=["Q4_K_M", "Q4_0"])
    parser.add_argument("--layers", type=int, default=LLAMA_3_2_1B["layers"])
    parser.add_argument("--vocab", type=int, default=LLAMA_3_2_1B["vocab"])
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each engine (medians are printed)")
    parser.add_argument("--no-llama-cpp", action="store_true")
    args = parser.parse_args()
    shape = {**LLAMA_3_2_1B, "layers": args.layers, "vocab": args.vocab}
    args.out.mkdir(parents=True, exist_ok=True)
    tag = f"llama3.2-1b-shape-L{args.layers}-V{args.vocab}"
    base = args.out / f"{tag}-F16.gguf"
    bandwidth = copy_bandwidth("cpu")
    emit(what="cpu_box", cpus=os.cpu_count(), copy_gb_s=round(bandwidth / 1e9, 1), load_avg=os.getloadavg())
    for ftype in args.types:
        path = args.out / f"{tag}-{ftype}.gguf"
        if not path.exists():
            if not base.exists():
                write_f16(base, shape)
            quantize(base, path, ftype)
        runs: dict[str, list[dict]] = {}
        for _ in range(args.repeats):  # engines interleaved, so a busy minute of the shared box hits them all
            for engine, quantization in (("velollm", "auto"), ("velollm", "none"), ("llama.cpp", None)):
                if engine == "llama.cpp":
                    if args.no_llama_cpp:
                        continue
                    r = measure(_LLAMA_CPP, str(path), str(args.prompt_len), str(args.new_tokens))
                    r |= {"weight_bytes": tensor_bytes(path), "quantization": "llama.cpp", "matmul": "ggml"}
                else:
                    r = measure(_VELOLLM, str(path), quantization, str(args.prompt_len), str(args.new_tokens))
                runs.setdefault(r["quantization"], []).append(r | {"engine": engine, "load_avg": os.getloadavg()[0]})
        rates = {}
        for path_name, rs in runs.items():
            r = rs[0]
            decode = statistics.median(1 / x["decode_step_s"] for x in rs)
            prefill = statistics.median(args.prompt_len / x["prefill_s"] for x in rs)
            roofline = bandwidth / r["weight_bytes"]
            rates[path_name] = dict(decode=decode, prefill=prefill)
            emit(what="cpu_gguf", quant=ftype, engine=r["engine"], path=path_name,
                 weights_gb=round(r["weight_bytes"] / 1e9, 3), decode_tok_s=round(decode, 2),
                 decode_runs=[round(1 / x["decode_step_s"], 2) for x in rs],
                 roofline_tok_s=round(roofline, 2), frac_roofline=round(decode / roofline, 3),
                 prefill_tok_s=round(prefill, 1),
                 lm_head_share=round(statistics.median(x["lm_head_s"] / x["decode_step_s"] for x in rs), 3)
                 if "lm_head_s" in r else None,
                 rss_gb=round(max(x["rss"] for x in rs) / 1e9, 2), peak_rss_gb=round(max(x["peak_rss"] for x in rs) / 1e9, 2),
                 first_tokens=r.get("token_ids"), matmul=r["matmul"], load_avg=[x["load_avg"] for x in rs])
        int4, dense = rates["int4"], rates["none"]
        emit(what="decision", quant=ftype, decode_int4_over_bf16=round(int4["decode"] / dense["decode"], 2),
             prefill_int4_over_bf16=round(int4["prefill"] / dense["prefill"], 2),
             auto_takes_int4=int4["decode"] > dense["decode"],
             int4_over_llama_cpp=round(int4["decode"] / rates["llama.cpp"]["decode"], 2) if "llama.cpp" in rates else None)


if __name__ == "__main__":
    main()
