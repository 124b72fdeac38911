"""`velollm pull MODEL`: ask the server's Ollama upstream to pull a model, with Ollama's progress.

VeloLLM itself never downloads: the server forwards /api/pull to its upstream (the Ollama at
$OLLAMA_HOST where it runs) and relays its NDJSON progress, which is drawn here as progress bars.
"""

from __future__ import annotations

import argparse

from velollm.commands.client import ServerClient, server_command


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("pull", help="pull a model into the server's Ollama upstream")
    parser.add_argument("model")
    parser.add_argument("--insecure", action="store_true", help="allow an insecure registry (passed to Ollama)")
    parser.set_defaults(run=server_command(run))


def run(args: argparse.Namespace, client: ServerClient) -> int:
    body = {"model": args.model, "stream": True, **({"insecure": True} if args.insecure else {})}
    draw_progress(client, "/api/pull", body)
    return 0


def draw_progress(client: ServerClient, path: str, body: dict) -> None:
    """Ollama's NDJSON progress of a pull or push, drawn as Ollama's CLI draws it: a bar per layer
    ("pulling 0123456789ab" / "pushing ..."), every other status on a line of its own (stderr)."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    tasks: dict[str, int] = {}
    with Progress(*columns, console=console, transient=False) as progress:
        for chunk in client.stream(path, body):
            status, digest = str(chunk.get("status", "")), chunk.get("digest")
            if digest and chunk.get("total"):
                if digest not in tasks:
                    label = f"{status.split(' ')[0]} {digest.removeprefix('sha256:')[:12]}"
                    tasks[digest] = progress.add_task(label, total=chunk["total"])
                progress.update(tasks[digest], completed=chunk.get("completed") or 0)
            elif status:
                progress.console.print(status)
