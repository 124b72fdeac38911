"""Batch-1 decode: VeloLLM vs transformers (static and dynamic KV cache) on the same random weights.

Prints JSON rows (key "what") with tok/s and the fraction of the roofline (measured device copy bandwidth
divided by the weight bytes: every decode step reads every weight once), and which compute paths ran.
Usage:  python benchmarks/gpu_decode.py                      # Llama-3.2-1B and Llama-3.1-8B shapes, bf16, CUDA
        python benchmarks/gpu_decode.py --shape llama-3.2-1b --peers none
        python benchmarks/gpu_decode.py --quick              # CPU dry run on a small shape (< 1 min)
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_util import emit
from shapes import SHAPES, copy_bandwidth, save_random_model, sync

DEFAULT_SHAPES = ["llama-3.2-1b", "llama-3.1-8b"]


def make_prompt(length: int, vocab: int) -> list[int]:
    return torch.randint(2, vocab, (length,), generator=torch.Generator().manual_seed(0)).tolist()


def rates(new_tokens: int, seconds: float, weight_bytes: int, bandwidth: float) -> dict:
    tok_s = new_tokens / seconds
    return dict(tok_s=round(tok_s, 1), frac_roofline=round(tok_s * weight_bytes / bandwidth, 3))


def run_velollm(folder: Path, prompt: list[int], new_tokens: int, device: str, dtype: str, bandwidth: float,
                enforce_eager: bool, quantization: str = "auto") -> dict:
    """End-to-end (prefill + decode) and decode-only rates from one request stepped through the engine.
    The roofline counts the weights as held (GGUF planes when quantized), embedding included."""
    from velollm import LLM, SamplingParams

    llm = LLM(str(folder), device=device, dtype=dtype, max_num_seqs=1, enforce_eager=enforce_eager,
              quantization=quantization)
    engine = llm.engine
    runner = engine.runner
    weight_bytes = runner.weight_bytes
    llm.generate([prompt], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))  # warm-up
    params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
    replays_before = runner.paths()["graph_replays"]
    sync(device)
    start = time.perf_counter()
    engine.add_request(prompt, params)
    first = None
    token_ids: list[int] = []
    while engine.has_unfinished_requests():
        for delta in engine.step():  # each step ends in the sampler's one host read, so clocks are honest
            token_ids += delta.token_ids
            first = first or time.perf_counter()
    end = time.perf_counter()
    generated = len(token_ids)
    paths = runner.paths()
    paths["graph_replays"] -= replays_before
    device_ms = device_step_ms(runner) if device == "cuda" else {}
    llm.close()
    del llm, engine, runner
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return dict(generated=generated, seconds=round(end - start, 4), ttft_ms=round((first - start) * 1e3, 2),
                weight_bytes=weight_bytes, **rates(generated, end - start, weight_bytes, bandwidth),
                decode_tok_s=round((generated - 1) / (end - first), 1),
                decode_frac_roofline=round((generated - 1) / (end - first) * weight_bytes / bandwidth, 3),
                paths=paths, token_ids=token_ids, **device_ms)


def device_step_ms(runner) -> dict:
    """GPU time of one batch-1 decode step without the host: the graph replay, then lm_head + argmax.
    Their sum against the measured step time is the host's share."""
    if runner.graphs is None or 1 not in runner.graphs.graphs:
        return {}
    graph = runner.graphs.graphs[1]
    hidden = runner.graphs.hidden[:1]
    timings = {}
    with torch.inference_mode():
        for name, fn in (("graph_ms", graph.replay), ("head_ms", lambda: runner.model.compute_logits(hidden).argmax(-1))):
            fn()
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(50):
                fn()
            torch.cuda.synchronize()
            timings[name] = round((time.perf_counter() - start) / 50 * 1e3, 3)
    return timings


def compare_eager(folder: Path, shape: str, prompt: list[int], new_tokens: int, device: str, dtype: str,
                  bandwidth: float, graph_tokens: list[int], graphed: dict) -> None:
    """The same request with enforce_eager: what the decode graphs buy, and whether the tokens agree
    (bf16 may legitimately drift after many steps: the graphs' attention splits the context differently)."""
    try:
        eager = run_velollm(folder, prompt, new_tokens, device, dtype, bandwidth, enforce_eager=True)
    except Exception as exc:
        emit(what="decode_b1/velollm_eager", shape=shape, error=repr(exc)[:300])
        return
    tokens = eager.pop("token_ids")
    same = next((i for i, (a, b) in enumerate(zip(tokens, graph_tokens)) if a != b), len(tokens))
    emit(what="decode_b1/velollm_eager", shape=shape, tok_s=eager["tok_s"], decode_tok_s=eager["decode_tok_s"],
         graph_speedup=round(graphed["decode_tok_s"] / eager["decode_tok_s"], 2),
         tokens_equal_to_graphs=same, of=len(tokens), steps=eager["paths"]["steps"])


def run_hf(model, prompt: list[int], new_tokens: int, device: str, cache: str | None) -> float:
    """Seconds for one greedy generate of exactly `new_tokens` tokens, after a warm-up of the same call
    (static-cache generate compiles the model on its first call)."""
    from transformers import GenerationConfig

    cfg = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                           pad_token_id=0, eos_token_id=None, cache_implementation=cache)
    ids = torch.tensor([prompt], device=device)
    mask = torch.ones_like(ids)
    # The dynamic cache needs only a short warm-up; the static one compiles for the full length.
    warm = cfg if cache else GenerationConfig(**{**cfg.to_dict(), "max_new_tokens": 16, "min_new_tokens": 16})
    model.generate(ids, attention_mask=mask, generation_config=warm)
    sync(device)
    start = time.perf_counter()
    out = model.generate(ids, attention_mask=mask, generation_config=cfg)
    sync(device)
    seconds = time.perf_counter() - start
    if out.shape[1] - ids.shape[1] != new_tokens:
        raise RuntimeError(f"generated {out.shape[1] - ids.shape[1]} tokens, expected {new_tokens}")
    return seconds


def run_peers(folder: Path, shape: str, prompt: list[int], new_tokens: int, device: str, torch_dtype: torch.dtype,
              bandwidth: float, caches: list[str]) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype).to(device).eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())  # tied weights once
    for name in caches:
        try:
            seconds = run_hf(model, prompt, new_tokens, device, None if name == "dynamic" else name)
        except Exception as exc:  # a peer that fails is reported, not hidden
            emit(what=f"decode_b1/hf_{name}_cache", shape=shape, error=repr(exc)[:300])
            continue
        emit(what=f"decode_b1/hf_{name}_cache", shape=shape, seconds=round(seconds, 4),
             **rates(new_tokens, seconds, weight_bytes, bandwidth))
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES), help="repeatable (default: 1B and 8B)")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "velollm-bench")
    parser.add_argument("--peers", choices=["dynamic", "static", "both", "none"], default="dynamic",
                        help="transformers peers: dynamic and/or static KV cache (static compiles: minutes)")
    parser.add_argument("--skip-velollm", action="store_true", help="peers only (a later step of gpu_check.sh)")
    parser.add_argument("--enforce-eager", action="store_true", help="VeloLLM without CUDA graphs")
    parser.add_argument("--quick", action="store_true", help="CPU dry run: small shape, float32, few tokens")
    args = parser.parse_args()
    if args.quick:
        args.device, args.shape = "cpu", args.shape or ["smollm2-135m"]
        args.prompt_len, args.new_tokens = min(args.prompt_len, 32), min(args.new_tokens, 12)
    shapes = args.shape or DEFAULT_SHAPES
    dtype = "bfloat16" if args.device == "cuda" else "float32"
    torch_dtype = getattr(torch, dtype)
    bandwidth = copy_bandwidth(args.device)
    hardware = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    emit(what="decode_setup", device=args.device, hardware=hardware, dtype=dtype, copy_GBps=round(bandwidth / 1e9, 1),
         prompt_len=args.prompt_len, new_tokens=args.new_tokens, torch=torch.__version__)

    # All VeloLLM rows first: they are the numbers the issue's targets are about, and the peers'
    # static-cache compile is the slow part of this script.
    failed = False
    done: list[tuple[str, Path, list[int]]] = []
    for shape in shapes:
        folder = save_random_model(shape, args.workdir / f"{shape}-{dtype}", torch_dtype)
        prompt = make_prompt(args.prompt_len, SHAPES[shape]["vocab_size"])
        if args.skip_velollm:
            done.append((shape, folder, prompt))
            continue
        try:
            ours = run_velollm(folder, prompt, args.new_tokens, args.device, dtype, bandwidth, args.enforce_eager)
        except Exception as exc:
            emit(what="decode_b1/velollm", shape=shape, error=repr(exc)[:500])
            failed = True
            continue
        token_ids = ours.pop("token_ids")
        emit(what="decode_b1/velollm", shape=shape, roofline_tok_s=round(bandwidth / ours["weight_bytes"], 1), **ours)
        if not args.enforce_eager and shape == shapes[0]:
            compare_eager(folder, shape, prompt, args.new_tokens, args.device, dtype, bandwidth, token_ids, ours)
        if args.device == "cuda" and ours["paths"]["attention"] != "paged/triton":
            print(f"error: paged Triton attention did not run: {ours['paths']}", file=sys.stderr)
            failed = True
        done.append((shape, folder, prompt))
    caches = {"dynamic": ["dynamic"], "static": ["static"], "both": ["dynamic", "static"], "none": []}[args.peers]
    for shape, folder, prompt in done:
        if caches:
            run_peers(folder, shape, prompt, args.new_tokens, args.device, torch_dtype, bandwidth, caches)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
