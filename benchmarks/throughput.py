"""Offline throughput: N requests of mixed prompt lengths submitted at once, VeloLLM vs transformers.

Same weights, same run: VeloLLM with asynchronous scheduling on and off (--async-scheduling both; one run
labelled async=unsupported where the engine has no such switch), transformers' continuous batching
(`generate_batch`) and padded `generate` (--skip-peers leaves those out).
Usage: python benchmarks/throughput.py --shape smollm2-135m --num-requests 32 --min-prompt 32 --max-prompt 256 --output-len 64
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from async_toggle import CHOICES, engine_settings
from shapes import SHAPES, copy_bandwidth, save_random_model, sync
from step_timer import StepTimer


def make_prompts(n: int, lo: int, hi: int, vocab: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(lo, hi + 1, (n,), generator=gen).tolist()
    return [torch.randint(2, vocab, (length,), generator=gen).tolist() for length in lengths]


def run_velollm(folder: Path, prompts, output_len: int, device: str, dtype: str, quantization: str = "auto",
                max_num_seqs: int = 256, **options) -> dict:
    """`options`: more EngineConfig fields (async_scheduling)."""
    from velollm import LLM, SamplingParams

    # On CUDA the KV cache is sized from free memory (gpu_memory_utilization), as a server would run.
    llm = LLM(str(folder), device=device, dtype=dtype, kv_cache_memory=None if device == "cuda" else 4 << 30,
              quantization=quantization, max_num_seqs=max_num_seqs, **options)
    params = SamplingParams(temperature=0, max_tokens=output_len, ignore_eos=True)
    llm.generate(prompts[:2], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))  # warm-up
    try:
        timer = StepTimer(llm.engine)
    except AttributeError as exc:  # an engine whose step is built differently: time the whole run only
        timer, timer_error = None, f"unavailable: {exc}"
    sync(device)
    start = time.perf_counter()
    outputs = llm.generate(prompts, params)
    sync(device)
    elapsed = time.perf_counter() - start
    paths = llm.engine.runner.paths()
    paths["step_time"] = timer.summary() if timer is not None else timer_error
    if timer is not None:
        timer.detach()
    llm.close()
    del llm
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()  # hand the KV cache back before transformers loads the same weights
    return dict(out_tokens=sum(len(o.token_ids) for o in outputs), seconds=elapsed, paths=paths)


def kernel_check(device: str, paths: dict) -> str | None:
    """Why the run does not count as a paged-Triton run on CUDA (None when it does, and always on CPU)."""
    if device != "cuda":
        return None
    steps = paths["steps"]
    if paths["attention"] != "paged/triton":
        return f"paged attention ran on {paths['attention']}, not Triton (is triton installed?)"
    if steps["prefill"] == 0 or steps["decode_eager"] + steps["decode_graph"] == 0:
        return f"the paged Triton prefill and decode kernels did not both run: steps {steps}"
    return None


def run_hf_generate_batch(model, prompts, output_len: int, device: str) -> dict:
    from transformers import GenerationConfig

    cfg = GenerationConfig(max_new_tokens=output_len, do_sample=False, eos_token_id=-1, pad_token_id=0)
    model.generate_batch(inputs=prompts[:2], generation_config=cfg)
    sync(device)
    start = time.perf_counter()
    outs = model.generate_batch(inputs=prompts, generation_config=cfg)
    sync(device)
    elapsed = time.perf_counter() - start
    return dict(out_tokens=sum(len(o.generated_tokens) for o in outs.values()), seconds=elapsed)


def run_hf_padded(model, prompts, output_len: int, device: str, batch_size: int) -> dict:
    from transformers import GenerationConfig

    cfg = GenerationConfig(max_new_tokens=output_len, min_new_tokens=output_len, do_sample=False,
                           pad_token_id=0, eos_token_id=None)
    total, elapsed = 0, 0.0
    for start_index in range(0, len(prompts), batch_size):
        chunk = prompts[start_index : start_index + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(chunk):  # left padding, as generate expects for decoder-only models
            ids[row, width - len(prompt):] = torch.tensor(prompt)
            mask[row, width - len(prompt):] = 1
        sync(device)
        t = time.perf_counter()
        out = model.generate(ids.to(device), attention_mask=mask.to(device), generation_config=cfg)
        sync(device)
        elapsed += time.perf_counter() - t
        total += (out.shape[1] - width) * len(chunk)
    return dict(out_tokens=total, seconds=elapsed, batch_size=batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES))
    parser.add_argument("--num-requests", type=int, default=32)
    parser.add_argument("--min-prompt", type=int, default=32)
    parser.add_argument("--max-prompt", type=int, default=256)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--padded-batch", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "velollm-bench")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--async-scheduling", choices=CHOICES, default="both",
                        help="VeloLLM runs with asynchronous scheduling on, off or both (default)")
    args = parser.parse_args()

    dtype = "bfloat16" if args.device == "cuda" else "float32"
    torch_dtype = getattr(torch, dtype)
    folder = save_random_model(args.shape, args.workdir / f"{args.shape}-{dtype}", torch_dtype)
    prompts = make_prompts(args.num_requests, args.min_prompt, args.max_prompt, SHAPES[args.shape]["vocab_size"])
    num_prompt_tokens = sum(len(p) for p in prompts)
    bandwidth = copy_bandwidth(args.device)
    hardware = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(json.dumps(dict(what="setup", shape=args.shape, device=args.device, hardware=hardware, dtype=dtype,
                          copy_GBps=round(bandwidth / 1e9, 1), requests=args.num_requests,
                          prompt_tokens=num_prompt_tokens, output_len=args.output_len)), flush=True)

    rows = []
    problem = None
    for label, options in engine_settings(args.async_scheduling):
        result = run_velollm(folder, prompts, args.output_len, args.device, dtype, **options)
        result["out_tok_s"] = round(result["out_tokens"] / result["seconds"], 1)
        rows.append((f"velollm async={label}", result))
        print(json.dumps(dict(what="velollm", shape=args.shape, requests=args.num_requests, **{"async": label},
                              **result)), flush=True)
        problem = problem or kernel_check(args.device, result["paths"])
    ours = rows[0][1]
    if not args.skip_peers:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype).to(args.device).eval()
        # Padded generate first: generate_batch switches the model to paged attention (transformers 5.17
        # leaves it switched, and a plain forward then refuses to run).
        for name, fn in (("hf_generate_padded", lambda: run_hf_padded(model, prompts, args.output_len, args.device, args.padded_batch)),
                         ("hf_generate_batch", lambda: run_hf_generate_batch(model, prompts, args.output_len, args.device))):
            try:
                result = fn()
            except Exception as exc:  # a peer path that fails is reported, not hidden
                print(json.dumps(dict(what=name, error=repr(exc)[:300])), flush=True)
                continue
            rows.append((name, result))
            print(json.dumps(dict(what=name, **result)), flush=True)

    print(f"\n=== throughput: {args.shape}, {args.num_requests} requests, prompts {args.min_prompt}-{args.max_prompt}, "
          f"{args.output_len} new tokens, {args.device} ({hardware}), {dtype}, copy bandwidth {bandwidth / 1e9:.1f} GB/s ===")
    print(f"{'engine':<26}{'output tok/s':>14}{'total tok/s':>14}{'seconds':>10}{'vs first':>12}")
    ours_rate = ours["out_tokens"] / ours["seconds"]
    for name, result in rows:
        rate = result["out_tokens"] / result["seconds"]
        total = (result["out_tokens"] + num_prompt_tokens) / result["seconds"]
        print(f"{name:<26}{rate:>14.1f}{total:>14.1f}{result['seconds']:>10.2f}{ours_rate / rate:>11.2f}x")
    for name, result in rows:
        if "paths" in result:
            print(f"{name} paths: {json.dumps(result['paths'])}")
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        print(json.dumps(dict(what="velollm_kernel_check", ok=False, error=problem)), flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
