"""Asynchronous scheduling on and off for the benchmarks (issue 18), tolerant of an engine without it.

The engine's switch is `EngineConfig.async_scheduling` (LLM(..., async_scheduling=...)) and the server's
`velollm serve --async-scheduling` (`--no-async-scheduling` when the flag is negatable). Where the field or
the flag does not exist (a tree from before it landed), one run is made with the label "unsupported".
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

CHOICES = ("on", "off", "both")
UNSUPPORTED = "unsupported"
REPO = Path(__file__).resolve().parents[1]


def _wanted(choice: str) -> tuple[str, ...]:
    if choice not in CHOICES:
        raise ValueError(f"async scheduling must be one of {CHOICES}, got {choice!r}")
    return ("on", "off") if choice == "both" else (choice,)


def engine_settings(choice: str) -> list[tuple[str, dict]]:
    """[(label, LLM keyword options)] for `choice`."""
    from velollm.config import EngineConfig

    if "async_scheduling" not in {f.name for f in dataclasses.fields(EngineConfig)}:
        return [(UNSUPPORTED, {})]
    return [(label, {"async_scheduling": label == "on"}) for label in _wanted(choice)]


def serve_help() -> str:
    return subprocess.run([sys.executable, "-m", "velollm.cli", "serve", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120).stdout


def serve_settings(choice: str, help_text: str | None = None) -> list[tuple[str, list[str]]]:
    """[(label, `velollm serve` arguments)] for `choice`, read off the server's --help."""
    text = serve_help() if help_text is None else help_text
    if "--async-scheduling" not in text:
        return [(UNSUPPORTED, [])]
    valued = re.search(r"--async-scheduling[ =]\{", text) is not None
    negatable = "--no-async-scheduling" in text

    def arguments(label: str) -> list[str]:
        if valued:
            return ["--async-scheduling", label]
        if label == "on":
            return ["--async-scheduling"]
        return ["--no-async-scheduling"] if negatable else []  # a plain flag: off by default

    return [(label, arguments(label)) for label in _wanted(choice)]
