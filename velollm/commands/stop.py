"""`velollm stop MODEL`: unload a model from the server at $VELOLLM_HOST (Ollama's `ollama stop`)."""

from __future__ import annotations

import argparse
import sys

from velollm.commands.client import ServerClient, server_command


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("stop", help="unload a running model")
    parser.add_argument("model")
    parser.set_defaults(run=server_command(run))


def is_running(client: ServerClient, name: str) -> bool:
    names = {n for m in client.get("/api/ps").get("models") or [] for n in (m.get("name"), m.get("model"))}
    return name in names or (":" not in name and f"{name}:latest" in names)


def run(args: argparse.Namespace, client: ServerClient) -> int:
    if not is_running(client, args.model):
        print(f'error: couldn\'t find model "{args.model}" to stop', file=sys.stderr)
        return 1
    # What `ollama stop` sends: an empty generate with keep_alive 0 unloads the model once it is idle.
    answer = client.post("/api/generate", {"model": args.model, "keep_alive": 0, "stream": False})
    if answer.get("done_reason") not in ("unload", None):
        print(f"error: the server answered {answer.get('done_reason')!r} instead of unloading", file=sys.stderr)
        return 1
    return 0
