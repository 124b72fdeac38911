"""GGUF 4-bit models on the CPU: VeloLLM's int4 path, its dequantized path and llama.cpp, same run.

Random weights of Llama-3.2-1B's shape are written once as F16 and quantized by llama.cpp's own quantizer
to each type (Q4_K_M: Q4_K with Q6_K attn_v / ffn_down in some layers and a Q6_K tied embedding; Q4_0).
The three engines live in one subprocess and take turns, one request each: every round runs one prefill
(or one decode step) of each, so a busy moment of the shared box hits all three alike:
  prefill  a PROMPT_LEN-token prompt (M = 256 rows per matmul): tok/s
  decode   batch 1, NEW_TOKENS tokens: tok/s from the median step, and the roofline it sits under: the
           measured copy bandwidth over the bytes one token reads (the weights as held: int4 planes plus the
           dequantized rest in the model's dtype, all of it in that dtype, or the file's tensors for llama.cpp)
  lm_head  the median time of the (tied, dequantized) lm_head at batch 1 against the decode step
  rss      resident memory each engine added when it loaded (and, for int4, the prefill's dequantization
           buffer it grew afterwards: velollm.kernels.int4_unpack)
Prefill is repeated --repeats times (fresh prompts: no prefix-cache hits); medians are printed.
`--dtype` is the models' (default: what `velollm serve` picks on this CPU for a GGUF file: bfloat16 where the
CPU has it in hardware, float32 elsewhere). `--quantization auto` takes the int4 path on a bfloat16 or float32
CPU model (velollm/engine/loader/gguf_quantized.py); the `decision` row says whether it measured faster. The box
is shared: every row carries the load average.

Usage: python benchmarks/cpu_quantized.py [--out DIR] [--types Q4_K_M Q4_0] [--prompt-len 256] [--new-tokens 32]
       [--dtype float32]
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

_PAIRED = """
import json, statistics, sys, time
import numpy as np, psutil, torch
from velollm import LLM, SamplingParams
path, prompt_len, new_tokens, repeats, with_llama_cpp, plain = sys.argv[1], *map(int, sys.argv[2:7])
dtype = sys.argv[7]
proc = psutil.Process()
engines, rss, info = {}, {}, {}
for quantization in ("auto", "none"):
    before = proc.memory_info().rss
    llm = LLM(path, device="cpu", dtype=dtype, quantization=quantization, max_num_seqs=1,
              kv_cache_memory=256 * 2**20)
    runner = llm.engine.runner
    engines[runner.quantization] = llm
    rss[runner.quantization] = proc.memory_info().rss - before
    info[runner.quantization] = dict(weight_bytes=runner.weight_bytes, matmul=runner.paths()["matmul"])
if with_llama_cpp:
    import llama_cpp
    if plain:  # no repacked (AMX / AVX-512) buffers: they have crashed on tiny tensors (tests/llama_cpp_ref.py)
        default = llama_cpp.llama_cpp.llama_model_default_params
        def plain_params():
            params = default(); params.use_extra_bufts = False; return params
        llama_cpp.llama_cpp.llama_model_default_params = plain_params
    before = proc.memory_info().rss
    n_ctx = prompt_len + new_tokens + 16  # scores has n_batch rows, indexed by position
    cpp = llama_cpp.Llama(path, n_ctx=n_ctx, n_batch=n_ctx, n_threads=2, verbose=False)
    rss["llama.cpp"] = proc.memory_info().rss - before
vocab = next(iter(engines.values())).engine.runner.config.vocab_size
prefill = {k: [] for k in rss}
decode = {k: [] for k in rss}
x = torch.randn(1, next(iter(engines.values())).engine.runner.config.hidden_size, dtype=getattr(torch, dtype))

def velollm_prefill(llm, prompt, max_tokens):
    llm.engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True))
    t = time.perf_counter(); llm.engine.step(); return time.perf_counter() - t

for rep in range(repeats + 1):  # round 0 warms up; fresh prompts each round (no prefix-cache hits)
    prompt = torch.randint(3, vocab, (prompt_len,), generator=torch.Generator().manual_seed(rep)).tolist()
    last = rep == repeats
    for name, llm in engines.items():
        seconds = velollm_prefill(llm, prompt, new_tokens if last else 1)
        if not last:
            while llm.engine.has_unfinished_requests():
                llm.engine.step()
        if rep:
            prefill[name].append(seconds)
    if with_llama_cpp:
        cpp.reset()
        t = time.perf_counter(); cpp.eval(prompt); seconds = time.perf_counter() - t
        if rep:
            prefill["llama.cpp"].append(seconds)
token = int(cpp.scores[cpp.n_tokens - 1].argmax()) if with_llama_cpp else 0
head = {k: [] for k in engines}
for _ in range(new_tokens - 1):  # one decode step of each engine per round: a busy moment hits them all
    for name, llm in engines.items():
        t = time.perf_counter(); llm.engine.step(); decode[name].append(time.perf_counter() - t)
        with torch.no_grad():
            t = time.perf_counter(); llm.engine.runner.model.lm_head(x); head[name].append(time.perf_counter() - t)
    if with_llama_cpp:
        t = time.perf_counter(); cpp.eval([token]); decode["llama.cpp"].append(time.perf_counter() - t)
        token = int(cpp.scores[cpp.n_tokens - 1].argmax())
for name, llm in engines.items():  # the int4 prefill's dequantization buffer, grown during the run
    scratches = {id(m.scratch): m.scratch.nbytes for m in llm.engine.runner.model.modules()
                 if getattr(m, "scratch", None) is not None}
    info[name]["scratch_bytes"] = sum(scratches.values())
print(json.dumps(dict(rss=rss, prefill=prefill, decode=decode, head=head, info=info)))
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
    import torch

    from velollm.hw.bandwidth import copy_bandwidth
    from velollm.hw.cpu_features import default_cpu_dtype

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "velollm-cpu-quantized",
                        help="folder for the GGUF files (reused when present)")
    parser.add_argument("--types", nargs="+", default=["Q4_K_M", "Q4_0"])
    parser.add_argument("--layers", type=int, default=LLAMA_3_2_1B["layers"])
    parser.add_argument("--vocab", type=int, default=LLAMA_3_2_1B["vocab"])
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="prefill rounds (medians are printed)")
    parser.add_argument("--no-llama-cpp", action="store_true")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default=default_cpu_dtype(),
                        help="the models' dtype (default: this CPU's for GGUF files)")
    args = parser.parse_args()
    shape = {**LLAMA_3_2_1B, "layers": args.layers, "vocab": args.vocab}
    args.out.mkdir(parents=True, exist_ok=True)
    tag = f"llama3.2-1b-shape-L{args.layers}-V{args.vocab}"
    base = args.out / f"{tag}-F16.gguf"
    bandwidth = copy_bandwidth("cpu")
    emit(what="cpu_box", cpus=os.cpu_count(), capability=torch.backends.cpu.get_cpu_capability(), dtype=args.dtype,
         copy_gb_s=round(bandwidth / 1e9, 1), load_avg=os.getloadavg())
    for ftype in args.types:
        path = args.out / f"{tag}-{ftype}.gguf"
        if not path.exists():
            if not base.exists():
                write_f16(base, shape)
            quantize(base, path, ftype)
        r = measure(_PAIRED, str(path), str(args.prompt_len), str(args.new_tokens), str(args.repeats),
                    str(int(not args.no_llama_cpp)), str(int(args.layers < 4)),  # a smoke run's tiny tensors
                    args.dtype)
        info = r["info"] | {"llama.cpp": dict(weight_bytes=tensor_bytes(path), matmul="ggml")}
        rates = {}
        for name, steps in r["decode"].items():
            decode = 1 / statistics.median(steps)
            prefill = args.prompt_len / statistics.median(r["prefill"][name])
            roofline = bandwidth / info[name]["weight_bytes"]
            rates[name] = dict(decode=decode, prefill=prefill, steps=steps)
            emit(what="cpu_gguf", quant=ftype, path=name, dtype=args.dtype,
                 weights_gb=round(info[name]["weight_bytes"] / 1e9, 3),
                 decode_tok_s=round(decode, 2), best_decode_tok_s=round(1 / min(steps), 2),
                 roofline_tok_s=round(roofline, 2), frac_roofline=round(decode / roofline, 3),
                 prefill_tok_s=round(prefill, 1),
                 lm_head_share=round(statistics.median(r["head"][name]) / statistics.median(steps), 3)
                 if name in r["head"] else None,
                 rss_gb=round(r["rss"][name] / 1e9, 2), prefill_scratch_gb=round(info[name].get("scratch_bytes", 0) / 1e9, 3),
                 matmul=info[name]["matmul"], load_avg=os.getloadavg())
        int4, dense = rates["int4"], rates["none"]
        paired = [b / a for a, b in zip(int4["steps"], dense["steps"])]  # dense step / int4 step, same round
        emit(what="decision", quant=ftype, dtype=args.dtype,
             decode_int4_over_dense=round(int4["decode"] / dense["decode"], 2),
             paired_step_ratio_median=round(statistics.median(paired), 2),
             prefill_int4_over_dense=round(int4["prefill"] / dense["prefill"], 2),
             auto_takes_int4=statistics.median(paired) > 1,
             int4_over_llama_cpp=round(int4["decode"] / rates["llama.cpp"]["decode"], 2) if "llama.cpp" in rates else None)

if __name__ == "__main__":
    main()
