"""`velollm push MODEL`: ask the server's Ollama upstream to push a model to its registry, with Ollama's progress.

The server forwards /api/push to its Ollama upstream (velollm/api/model_admin.py; with `--config`, the
first Ollama backend) and relays the NDJSON progress (`retrieving manifest`, `pushing <digest>` per layer,
`pushing manifest`, `success`), drawn here as `velollm pull` draws a pull. Without an Ollama upstream the
server answers 501 saying so, and the command exits with status 1 and that message.
"""

from __future__ import annotations

import argparse

from velollm.commands.client import ServerClient, server_command
from velollm.commands.pull import draw_progress


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("push", help="push a model to a registry through the server's Ollama upstream")
    parser.add_argument("model")
    parser.add_argument("--insecure", action="store_true", help="use an insecure registry (passed to Ollama)")
    parser.set_defaults(run=server_command(run))


def run(args: argparse.Namespace, client: ServerClient) -> int:
    body = {"model": args.model, "stream": True, **({"insecure": True} if args.insecure else {})}
    draw_progress(client, "/api/push", body)
    return 0
