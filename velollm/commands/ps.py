"""`velollm ps`: the models the server at $VELOLLM_HOST has loaded (Ollama's `ollama ps`)."""

from __future__ import annotations

import argparse
import datetime as dt

from velollm.commands.client import ServerClient, server_command
from velollm.commands.text_table import text_table


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ps", help="list the models the server has loaded")
    parser.add_argument("prefix", nargs="?", default="", help="only the models whose name starts with it")
    parser.set_defaults(run=server_command(run))


def human_bytes(n: int) -> str:
    """Ollama's format.HumanBytes: decimal units; from 10 up the whole number cut ("13 GB", "134 MB"), below it
    one decimal unless whole ("4.7 GB", "2.0 GB" for 2.02 GB, "2 MB" for exactly 2 MB)."""
    if n < 1000:
        return f"{n} B"
    for limit, unit in ((10**12, "TB"), (10**9, "GB"), (10**6, "MB"), (10**3, "KB")):
        if n >= limit:
            value = n / limit
            return f"{int(value)} {unit}" if value >= 10 or value == int(value) else f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def processor(size: int, size_vram: int) -> str:
    """Ollama's PROCESSOR column: where the model's memory is."""
    if size_vram <= 0:
        return "100% CPU"
    if size_vram == size:
        return "100% GPU"
    if size_vram > size or size <= 0:  # more in GPU memory than the whole: Ollama says it does not know
        return "Unknown"
    gpu = round(100 * size_vram / size)
    return f"{100 - gpu}%/{gpu}% CPU/GPU"


def until(expires_at: str, now: dt.datetime | None = None) -> str:
    """Ollama's UNTIL column (format.HumanTime): "4 minutes from now", "About an hour from now", "Forever",
    "Stopping..."."""
    try:
        when = dt.datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    except ValueError:
        return expires_at
    now = now or dt.datetime.now(dt.timezone.utc)
    left = (when - now).total_seconds()
    if left <= 0:
        return "Stopping..."
    if left / 3600 // 24 // 365 > 20:
        return "Forever"
    return f"{human_duration(left)} from now"


def human_duration(seconds: float) -> str:
    """Ollama's format.humanDuration: "About a minute", "5 minutes", "About an hour", "3 hours", "2 days"..."""
    if seconds < 1:
        return "Less than a second"
    if int(seconds) == 1:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = int(seconds // 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    for limit, unit, per in ((48, "hours", 1), (24 * 7 * 2, "days", 24), (24 * 30 * 2, "weeks", 24 * 7),
                             (24 * 365 * 2, "months", 24 * 30)):
        if hours < limit:
            return "About an hour" if hours == 1 else f"{hours // per} {unit}"
    return f"{hours // (24 * 365)} years"


def run(args: argparse.Namespace, client: ServerClient) -> int:
    models = client.get("/api/ps").get("models") or []
    rows = [("NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL")]
    for m in models:
        if not str(m.get("name", "")).startswith(args.prefix):  # `ollama ps llama`
            continue
        size, vram = int(m.get("size") or 0), int(m.get("size_vram") or 0)
        rows.append((m.get("name", ""), (m.get("digest") or "")[:12], human_bytes(size), processor(size, vram),
                     str(m.get("context_length") or ""), until(m.get("expires_at") or "")))
    print("\n".join(text_table(rows)))
    return 0
