"""`velollm detect`: the hardware (NVML where a driver answers, torch otherwise), the Ollama install,
the settings VeloLLM suggests, and which local models fit."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("detect", help="show CPU, memory, GPUs, the Ollama store, and what fits")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--no-ollama", action="store_true", help="do not probe $OLLAMA_HOST")
    parser.add_argument("--no-models", action="store_true", help="skip the table of models that fit")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from velollm.commands.fits import model_fits
    from velollm.commands.ollama_info import detect_ollama
    from velollm.hw.detect import detect
    from velollm.hw.recommend import recommend

    env = dict(os.environ)
    hw = detect()
    rec = recommend(hw)
    ollama = detect_ollama(env, probe=not args.no_ollama)
    fits = [] if args.no_models else model_fits(hw, rec, env)
    if args.json:
        out = {"hardware": dataclasses.asdict(hw), "recommendation": dataclasses.asdict(rec),
               "ollama": dataclasses.asdict(ollama),
               "models": [{**dataclasses.asdict(f), "full_contexts": f.full_contexts} for f in fits]}
        print(json.dumps(out, default=str, indent=2))
        return 0
    from rich.console import Console

    from velollm.commands.detect_view import print_fits, print_machine

    console = Console()
    print_machine(console, hw, rec, ollama)
    if not args.no_models:
        print_fits(console, fits)
    return 0
