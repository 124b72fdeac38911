"""`velollm benchmark --model M`: how fast the native engine runs M on this machine.

Batch-1 decode against the memory-bandwidth roofline (measured here), then offline throughput with
`--num-prompts` requests at once. Peers (transformers, llama.cpp, Ollama) are compared side by side by
the scripts in benchmarks/ of the source tree.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from velollm.commands.engine_options import add_engine_arguments, engine_options
from velollm.config import QUANTIZATIONS, parse_size


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("benchmark", help="measure decode speed and throughput of a model on this machine")
    parser.add_argument("--model", default="demo", help="a model specifier, as for serve")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--quantization", default="auto", choices=QUANTIZATIONS,
                        help="GGUF weights kept quantized (auto: on GPUs) or dequantized at load")
    parser.add_argument("--num-prompts", type=int, default=64, help="requests of the throughput run (default 64)")
    parser.add_argument("--input-len", type=int, default=128, help="prompt tokens per request (default 128)")
    parser.add_argument("--output-len", type=int, default=128, help="generated tokens per request (default 128)")
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--kv-cache-memory", type=parse_size, default=None,
                        help="KV cache size on CPU, e.g. 512MiB (default 2 GiB); on GPU it is sized from free memory")
    parser.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs")
    add_engine_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from velollm.config import EngineConfig
    from velollm.engine.benchmark import run_benchmark
    from velollm.engine.llm_engine import LLMEngine
    from velollm.errors import VeloLLMError

    for name in ("num_prompts", "input_len", "output_len"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    try:
        config = EngineConfig(device=args.device, dtype=args.dtype, max_num_seqs=min(args.num_prompts, 256),
                              max_model_len=args.max_model_len, kv_cache_memory=args.kv_cache_memory,
                              enforce_eager=args.enforce_eager, quantization=args.quantization,
                              **engine_options(args, os.environ))
        engine = LLMEngine.from_model(args.model, config, cache_dir=os.environ.get("VELOLLM_CACHE"))
        try:
            result = run_benchmark(engine, num_requests=args.num_prompts, input_len=args.input_len,
                                   output_len=args.output_len)
        finally:
            engine.close()
    except (VeloLLMError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        out = dataclasses.asdict(result)
        out["model"] = args.model
        out["decode"]["fraction_of_roofline"] = result.decode.fraction_of_roofline
        out["throughput"].update(output_tok_s=result.throughput.output_tok_s, total_tok_s=result.throughput.total_tok_s)
        print(json.dumps(out, indent=2))
        return 0
    _print_table(args.model, result)
    return 0


def _print_table(model: str, result) -> None:
    from rich.console import Console
    from rich.table import Table

    d, t = result.decode, result.throughput
    table = Table(title=f"velollm benchmark: {model}", show_header=False)
    table.add_row("device", f"{result.hardware} ({result.device}), {result.dtype}")
    table.add_row("memory copy", f"{result.copy_bytes_per_s / 1e9:.1f} GB/s (read + write, measured now)")
    size = f"{result.weight_bytes / 1e9:.2f} GB" if result.weight_bytes >= 1e8 else f"{result.weight_bytes / 1e6:.2f} MB"
    table.add_row("weights", f"{size} -> roofline {d.roofline_tok_s:.1f} tok/s at batch 1")
    table.add_row("batch-1 decode", f"{d.decode_tok_s:.1f} tok/s ({d.fraction_of_roofline:.0%} of roofline), "
                                    f"first token {d.ttft_s * 1e3:.0f} ms after a {d.prompt_tokens}-token prompt")
    table.add_row("throughput", f"{t.output_tok_s:.1f} output tok/s, {t.total_tok_s:.1f} total tok/s "
                                f"({t.num_requests} requests x {t.output_tokens // t.num_requests} tokens, "
                                f"{t.seconds:.2f} s)")
    Console().print(table)
