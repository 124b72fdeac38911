"""`velollm pull MODEL`: ask the server's Ollama upstream to pull a model, with Ollama's progress.

VeloLLM itself never downloads: the server forwards /api/pull to its upstream (the Ollama at
$OLLAMA_HOST where it runs) and relays its NDJSON progress, which is drawn here as progress bars.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

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


def draw_progress(client: ServerClient, path: str, body: dict, bar_label: Callable[[str, str], str] | None = None
                  ) -> None:
    """Ollama's NDJSON progress of a pull, push or create, drawn as Ollama's CLI draws it: a bar per digest
    with a total ("pulling 0123456789ab" / "pushing ...", or `bar_label(status, digest)`: create's
    "quantizing F16 model to Q4_K_M"), every other status on a line of its own, once (stderr). A status
    after bars settles them: they are printed in their final state above it and leave the live display, so
    the lines stay in the server's order (also when stderr is not a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    label = bar_label or (lambda status, digest: f"{status.split(' ')[0]} {digest.removeprefix('sha256:')[:12]}")
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    tasks: dict[str, int] = {}

    def settle() -> None:  # the bars so far: printed in their final state, out of the live display
        done = [task for task in progress.tasks if task.id in tasks.values()]
        if done:
            progress.console.print(progress.make_tasks_table(done))
            for task in done:
                progress.remove_task(task.id)
            tasks.clear()

    last = ""
    # no live display off a terminal (rich would end it with an empty line): the settled bars alone
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        try:
            for chunk in client.stream(path, body):
                status, digest = str(chunk.get("status", "")), chunk.get("digest")
                if digest and chunk.get("total"):
                    if digest not in tasks:
                        tasks[digest] = progress.add_task(label(status, str(digest)), total=chunk["total"])
                    progress.update(tasks[digest], completed=chunk.get("completed") or 0)
                elif status and status != last:
                    settle()
                    progress.console.print(status)
                last = status
        finally:  # an error line ends the stream: the bars as they stood, above it
            settle()
