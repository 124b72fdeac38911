"""`velollm rm MODEL...`: delete models through the server, as `ollama rm` does (DELETE /api/delete).

The server deletes in its Ollama upstream, or in the Ollama store it loads from when it has none
(velollm/api/model_admin.py). One line per model deleted; the first failure stops, with exit status 1.
"""

from __future__ import annotations

import argparse

from velollm.commands.client import ServerClient, server_command


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("rm", help="delete models (in the server's Ollama upstream or its Ollama store)")
    parser.add_argument("models", nargs="+", metavar="MODEL")
    parser.set_defaults(run=server_command(run))


def run(args: argparse.Namespace, client: ServerClient) -> int:
    for name in args.models:
        client.call("DELETE", "/api/delete", {"model": name})
        print(f"deleted '{name}'")
    return 0
