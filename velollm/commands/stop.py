"""`velollm stop MODEL`: unload a model from the server at $VELOLLM_HOST (Ollama's `ollama stop`)."""

from __future__ import annotations

import argparse
import sys

from velollm.commands.client import ServerClient, server_command
from velollm.commands.ps import until


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("stop", help="unload a running model")
    parser.add_argument("model")
    parser.set_defaults(run=server_command(run))


def _running(client: ServerClient, name: str) -> dict | None:
    """The /api/ps entry of `name` (`m` is `m:latest`), or None."""
    for m in client.get("/api/ps").get("models") or []:
        if name in (m.get("name"), m.get("model")) or (":" not in name and f"{name}:latest" == m.get("name")):
            return m
    return None


def _listed(client: ServerClient, name: str) -> bool:
    """True when /api/tags lists `name` (`m` is `m:latest`). Not /api/show: the server loads what it shows."""
    names = {m.get("name") for m in client.get("/api/tags").get("models") or []}
    return name in names or (":" not in name and f"{name}:latest" in names)


def run(args: argparse.Namespace, client: ServerClient) -> int:
    if _running(client, args.model) is None:
        if _listed(client, args.model):  # a model not loaded: nothing to unload, Ollama's stop succeeds
            return 0
        print(f'Error: couldn\'t find model "{args.model}" to stop', file=sys.stderr)
        return 1
    # What `ollama stop` sends: an empty generate with keep_alive 0 unloads the model once it is idle.
    answer = client.post("/api/generate", {"model": args.model, "keep_alive": 0, "stream": False})
    if answer.get("done_reason") not in ("unload", None):
        print(f"Error: the server answered {answer.get('done_reason')!r} instead of unloading", file=sys.stderr)
        return 1
    left = _running(client, args.model)
    if left is not None and until(left.get("expires_at") or "") == "Forever":
        print(f"{args.model} stays loaded: the server was started with it (--model) and keeps it", file=sys.stderr)
    return 0
