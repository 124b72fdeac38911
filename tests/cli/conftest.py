"""A live `velollm serve` (demo model) for the CLI client commands, and how to run the CLI against it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serve_process import REPO, start_serve, stop_serve


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("cli")
    proc, url, _log, _ = start_serve(tmp)
    try:
        yield url
    finally:
        stop_serve(proc)


def cli_env(url: str, home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "VELOLLM_HOST": url, "HOME": str(home), "COLUMNS": "200",
           "TERM": "xterm", **extra}
    for name in ("VELOLLM_API_KEY", "OLLAMA_HOST"):
        if name not in extra:
            env.pop(name, None)
    return env


def velollm(url: str, home: Path, *args: str, stdin: str | None = None, timeout: float = 120,
            **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "velollm.cli", *args], capture_output=True, text=True,
                          input=stdin if stdin is not None else "", timeout=timeout, cwd=REPO,
                          env=cli_env(url, home, **extra))


def terminal_signals() -> None:
    """A pexpect child's preexec_fn: Ctrl-C's SIGINT handled as in a terminal's foreground job. A test run
    started in the background (`make test &`, CI runners) ignores SIGINT, children inherit that, and Python
    then installs no KeyboardInterrupt handler: the Ctrl-C tests would send ^C to a process deaf to it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def screen(raw: str) -> list[str]:
    """What a terminal shows for `raw`: lines, with the cursor-left (ESC[nD) and clear-to-end (ESC[K) moves."""
    lines, col = [""], 0
    for token in re.findall(r"\x1b\[\d*[DK]|.", raw, re.DOTALL):
        if token == "\n":
            lines.append("")
            col = 0
        elif token.startswith("\x1b") and token.endswith("D"):
            col = max(0, col - int(token[2:-1] or 1))
        elif token.startswith("\x1b"):
            lines[-1] = lines[-1][:col]
        else:
            lines[-1] = lines[-1][:col] + token + lines[-1][col + 1:]
            col += 1
    return lines

