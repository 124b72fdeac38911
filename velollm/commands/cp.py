"""`velollm cp SOURCE DESTINATION`: copy a model under a new name through the server, as `ollama cp` does
(POST /api/copy: in the server's Ollama upstream, or in the Ollama store it loads from when it has none)."""

from __future__ import annotations

import argparse

from velollm.commands.client import ServerClient, server_command


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cp", help="copy a model (in the server's Ollama upstream or its Ollama store)")
    parser.add_argument("source", metavar="SOURCE")
    parser.add_argument("destination", metavar="DESTINATION")
    parser.set_defaults(run=server_command(run))


def run(args: argparse.Namespace, client: ServerClient) -> int:
    client.call("POST", "/api/copy", {"source": args.source, "destination": args.destination})
    print(f"copied '{args.source}' to '{args.destination}'")
    return 0
