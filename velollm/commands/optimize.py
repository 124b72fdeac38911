"""`velollm optimize`: settings for this machine, each value with its reason: VeloLLM serve flags (a shell
script) and, for users who keep Ollama, its environment (an env file and a systemd drop-in).
`--check` compares a running server's settings ($VELOLLM_HOST) with the recommendation."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("optimize", help="write serve flags and Ollama settings for this machine")
    parser.add_argument("--model", default=None, help="the model to serve (its context length goes into the flags)")
    parser.add_argument("--write", type=Path, default=None, metavar="DIR",
                        help="write velollm-serve.sh, ollama.env and ollama.service.d/velollm.conf into DIR")
    parser.add_argument("--check", action="store_true",
                        help="compare the server at $VELOLLM_HOST (default http://127.0.0.1:8000) with the advice")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from velollm.commands.fits import model_fits
    from velollm.commands.optimize_files import settings_files
    from velollm.hw.detect import detect
    from velollm.hw.ollama_env import ollama_settings
    from velollm.hw.recommend import recommend

    env = dict(os.environ)
    hw = detect()
    rec = recommend(hw)
    fits = model_fits(hw, rec, env)
    if args.check:
        from velollm.commands.optimize_check import check_server

        return check_server(env, rec, fits)
    machine = ", ".join(g.name for g in hw.gpus) or f"{hw.cpu} ({hw.num_cores} cores, CPU only)"
    files = settings_files(rec, ollama_settings(hw), fits, args.model, machine)
    if args.write is None:
        for f in files:
            print(f"==> {f.name} (apply: {f.how})\n{f.text}")
        return 0
    for f in files:
        path = args.write / f.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f.text)
        if path.suffix == ".sh":
            path.chmod(0o755)
        print(f"wrote {path}  (apply: {f.how})", file=sys.stderr)
    return 0
