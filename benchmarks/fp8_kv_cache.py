"""fp8 (e4m3) KV cache vs the bfloat16 one: capacity, decode-attention speed, and what it costs in tokens.

1. capacity: KV bytes per token and tokens per GiB of the real model shapes (what the runner allocates).
2. decode attention alone (CUDA; `--small` runs a tiny CPU-interpreter dry run): paged decode over a
   bfloat16 and over an fp8 cache, Llama-3.1-8B / 3.2-1B heads, batch 64 and context 4096 by default: time,
   GB/s of cache bytes read, the fp8 speed-up, and the error against the bfloat16 cache's output.
3. accuracy (any device): the `demo` model (random weights) teacher-forced over every prefix of its own
   greedy outputs, with a bfloat16 cache and with an fp8 one: how often the top-1 agrees and how far the
   logprob of the reference token moves. Random weights give flat distributions full of near-ties, so this
   is a pessimistic floor, not a real model's figure.
4. engine throughput (CUDA, `--engine`): the Llama-3.2-1B shape (random weights), many long requests at once,
   output tok/s with each KV dtype; the fp8 cache holds twice the tokens in the same memory.
Usage: python benchmarks/fp8_kv_cache.py [--engine]          (CPU: TRITON_INTERPRET=1 ... --small)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_util import SMALL_HELP, emit, time_cpu, time_cuda  # noqa: E402
from shapes import SHAPES, save_random_model  # noqa: E402
from velollm.kernels import decode_attention as da  # noqa: E402
from velollm.kernels.fp8 import FP8_KV_DTYPE, fp8_supported, to_cache_dtype  # noqa: E402


def capacity() -> None:
    for name, s in SHAPES.items():
        values = 2 * s["num_hidden_layers"] * s["num_key_value_heads"] * s["head_dim"]  # K and V, every layer
        emit(what="fp8_kv_capacity", shape=name, bf16_bytes_per_token=2 * values, fp8_bytes_per_token=values,
             bf16_tokens_per_GiB=(1 << 30) // (2 * values), fp8_tokens_per_GiB=(1 << 30) // values)


def _caches(batch: int, context: int, hkv: int, head_dim: int, device: str):
    block_size = 16
    blocks_per_seq = -(-context // block_size)
    num_blocks = batch * blocks_per_seq + 1
    gen = torch.Generator(device="cpu").manual_seed(0)
    k = torch.randn(num_blocks, block_size, hkv, head_dim, generator=gen).to(device, torch.bfloat16)
    v = torch.randn(num_blocks, block_size, hkv, head_dim, generator=gen).to(device, torch.bfloat16)
    tables = (torch.randperm(num_blocks - 1, generator=gen)[: batch * blocks_per_seq] + 1).view(batch, -1)
    return k, v, tables.to(device, torch.int32)


def decode_attention(batch: int, context: int, device: str) -> bool:
    ok = True
    for model in ("llama-3.1-8b", "llama-3.2-1b"):
        s = SHAPES[model]
        hq, hkv, head_dim = s["num_attention_heads"], s["num_key_value_heads"], s["head_dim"]
        k16, v16, tables = _caches(batch, context, hkv, head_dim, device)
        k8, v8 = to_cache_dtype(k16, FP8_KV_DTYPE), to_cache_dtype(v16, FP8_KV_DTYPE)
        q = torch.randn(batch, hq, head_dim, generator=torch.Generator().manual_seed(1)).to(device, torch.bfloat16)
        lens = torch.full((batch,), context, dtype=torch.int32, device=device)
        scale = head_dim**-0.5
        times, outs = {}, {}
        for kv_dtype, (k, v) in (("bfloat16", (k16, v16)), ("float8_e4m3fn", (k8, v8))):
            out = torch.empty_like(q)

            def call(k=k, v=v, out=out):
                return da.paged_decode_attention_triton(q, k, v, tables, lens, scale, out=out)

            call()
            times[kv_dtype] = time_cuda(call) if device == "cuda" else time_cpu(call, repeats=1)
            outs[kv_dtype] = out
            kv_bytes = 2 * batch * context * hkv * head_dim * k.element_size()
            emit(what="fp8_decode_attention_cfg", model=model, kv_dtype=kv_dtype, batch=batch, context=context,
                 us=round(times[kv_dtype] * 1e6, 1), GBps=round(kv_bytes / times[kv_dtype] / 1e9, 1))
        err = (outs["float8_e4m3fn"].float() - outs["bfloat16"].float()).abs().max().item()
        ok &= err < 0.1  # outputs of magnitude ~0.1 here (averages of ~N(0,1) values over `context` keys)
        emit(what="fp8_decode_attention", model=model, batch=batch, context=context,
             speedup=round(times["bfloat16"] / times["float8_e4m3fn"], 2), max_err_vs_bf16=round(err, 4))
        del k16, v16, k8, v8
    return ok


def accuracy(device: str, steps: int, num_prompts: int) -> None:
    from velollm.config import EngineConfig
    from velollm.engine.llm_engine import LLMEngine
    from velollm.sampling_params import SamplingParams

    engines = {kv: LLMEngine.from_model("demo", EngineConfig(device=device, dtype="bfloat16", max_num_seqs=64,
                                                             kv_cache_memory=256 << 20, kv_cache_dtype=kv))
               for kv in ("auto", "fp8")}
    gen = torch.Generator().manual_seed(0)
    vocab = engines["auto"].model_config.vocab_size
    prompts = [torch.randint(3, vocab, (int(n),), generator=gen).tolist()
               for n in torch.randint(8, 200, (num_prompts,), generator=gen)]
    greedy = SamplingParams(temperature=0, max_tokens=steps, ignore_eos=True)
    ref = _run(engines["auto"], prompts, greedy)
    prefixes = [p + out[:t] for p, out in zip(prompts, ref) for t in range(steps)]
    one = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True, logprobs=20)
    want = _run(engines["auto"], prefixes, one, logprobs=True)
    got = _run(engines["fp8"], prefixes, one, logprobs=True)
    agree = sum(w[0] == g[0] for w, g in zip(want, got))
    gaps = [abs(w[1][w[0]] - g[1].get(w[0], min(g[1].values()))) for w, g in zip(want, got)]
    emit(what="fp8_accuracy", model="demo (random weights)", device=device, compute="bfloat16", steps=len(prefixes),
         top1_agreement=round(agree / len(prefixes), 3), mean_logprob_gap=round(sum(gaps) / len(gaps), 4),
         max_logprob_gap=round(max(gaps), 4))
    for engine in engines.values():
        engine.close()


def _run(engine, prompts, params, logprobs: bool = False) -> list:
    ids = {engine.add_request(p, params).request_id: i for i, p in enumerate(prompts)}
    tokens: list[list[int]] = [[] for _ in prompts]
    entries: list[list[dict]] = [[] for _ in prompts]
    while engine.has_unfinished_requests():
        for delta in engine.step():
            tokens[ids[delta.request_id]] += delta.token_ids
            entries[ids[delta.request_id]] += delta.logprobs or []
    if logprobs:
        return [(t[0], e[0]) for t, e in zip(tokens, entries)]
    return tokens


def engine_throughput(workdir: Path, num_requests: int, prompt_len: int, output_len: int) -> None:
    from velollm import LLM, SamplingParams

    shape = "llama-3.2-1b"
    folder = save_random_model(shape, workdir / f"{shape}-bfloat16", torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(2, SHAPES[shape]["vocab_size"], (prompt_len,), generator=gen).tolist()
               for _ in range(num_requests)]
    params = SamplingParams(temperature=0, max_tokens=output_len, ignore_eos=True)
    for kv in ("auto", "fp8"):
        llm = LLM(str(folder), device="cuda", dtype="bfloat16", max_num_seqs=num_requests, kv_cache_dtype=kv)
        llm.generate(prompts[:2], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        outputs = llm.generate(prompts, params)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        runner = llm.engine.runner
        emit(what="fp8_engine_throughput", shape=shape, kv_cache_dtype=kv, requests=num_requests,
             prompt_len=prompt_len, output_len=output_len,
             output_tok_s=round(sum(len(o.token_ids) for o in outputs) / seconds, 1),
             kv_tokens=runner.num_blocks * runner.block_size, kv_GiB=round(runner.kv_cache_bytes() / 2**30, 2),
             preemptions=llm.engine.scheduler.num_preemptions, paths=runner.paths()["kv_cache_dtype"])
        llm.close()
        del llm
        torch.cuda.empty_cache()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--context", type=int, default=4096)
    p.add_argument("--steps", type=int, default=32, help="greedy steps per prompt of the accuracy run")
    p.add_argument("--prompts", type=int, default=16, help="prompts of the accuracy run")
    p.add_argument("--engine", action="store_true", help="also the engine throughput run (CUDA)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "velollm-bench")
    p.add_argument("--small", action="store_true", help=SMALL_HELP)
    a = p.parse_args()
    device = "cpu" if a.small or not torch.cuda.is_available() else "cuda"
    hardware = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    emit(what="setup", device=device, hardware=hardware, torch=torch.__version__)
    if device == "cuda" and not fp8_supported(torch.device("cuda")):
        emit(what="fp8_unsupported", reason="compute capability below 8.9: the fp8 KV cache falls back to auto")
        return 1
    capacity()
    ok = True
    if device == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        batch, context = (2, 40) if a.small else (a.batch, a.context)
        ok = decode_attention(batch, context, device)
    accuracy(device, 4 if a.small else a.steps, 2 if a.small else a.prompts)
    if a.engine and device == "cuda":
        engine_throughput(a.workdir, num_requests=128, prompt_len=2048, output_len=128)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
