"""`velollm detect`: the hardware and Ollama install VeloLLM sees, and the settings it suggests."""

from __future__ import annotations

import argparse
import dataclasses
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("detect", help="show CPU, memory, GPUs, the Ollama store, and suggested flags")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--no-ollama", action="store_true", help="do not probe $OLLAMA_HOST")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from velollm.hw.detect import detect
    from velollm.hw.recommend import recommend

    hw = detect(probe_ollama=not args.no_ollama)
    rec = recommend(hw)
    if args.json:
        print(json.dumps({"hardware": dataclasses.asdict(hw), "recommendation": dataclasses.asdict(rec)},
                         default=str, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="velollm detect", show_header=False)
    table.add_row("CPU", f"{hw.cpu} ({hw.num_cores} cores)")
    table.add_row("memory", f"{hw.total_memory / 2**30:.1f} GiB ({hw.available_memory / 2**30:.1f} GiB free)")
    for gpu in hw.gpus:
        table.add_row(f"GPU {gpu.index}", f"{gpu.name}, {gpu.total_memory / 2**30:.0f} GiB, sm_{gpu.compute_capability[0]}{gpu.compute_capability[1]}")
    if not hw.gpus:
        table.add_row("GPU", "none (CUDA not available)")
    if hw.ollama is not None:
        table.add_row("Ollama store", f"{hw.ollama.store} ({hw.ollama.num_models} models)")
        server = f"version {hw.ollama.server_version}" if hw.ollama.server_version else "not answering"
        table.add_row("Ollama server", f"{hw.ollama.host}: {server}")
    table.add_row("suggested", f"velollm serve {rec.serve_flags()}")
    for note in rec.notes:
        table.add_row("", note)
    Console().print(table)
    return 0
