"""`velollm serve` as a real subprocess on a free port, for the tests that need a live server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0
BIND_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
                timeout: float = START_TIMEOUT_S,
                preexec_fn: Callable[[], None] | None = None) -> tuple[subprocess.Popen, str, Path, float]:
    """`velollm serve ARGS`; returns (process, url, log, seconds until /health said ok).

    The demo model is generated under tmp_path; no API key or upstream leaks in from the environment
    unless `env` sets them. `preexec_fn` runs in the child before it starts (e.g. to lower its rlimits).
    """
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    full_env = {**os.environ, "PYTHONPATH": pythonpath, "VELOLLM_CACHE": str(tmp_path / "cache"), **(env or {})}
    for name in ("VELOLLM_API_KEY", "OLLAMA_HOST"):
        if not env or name not in env:
            full_env.pop(name, None)
    for attempt in range(BIND_ATTEMPTS):
        port = free_port()
        log = tmp_path / f"serve-{port}.log"
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "velollm.cli", "serve", "--port", str(port), "--stats-interval",
                                 "0", *args], cwd=REPO, env=full_env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                preexec_fn=preexec_fn)  # noqa: PLW1509 (a setrlimit call: nothing a thread holds)
        try:
            return proc, *_healthy(proc, port, log, started, timeout)
        except _PortTaken:
            if attempt + 1 == BIND_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


class _PortTaken(RuntimeError):
    """The free port was taken between free_port() and the server's bind (by another server or by a client's
    outgoing connection, which the kernel gives any free port)."""


def _healthy(proc: subprocess.Popen, port: int, log: Path, started: float, timeout: float) -> tuple[str, Path, float]:
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=2) as client:
        while True:
            if proc.poll() is not None:
                text = log.read_text()
                error = _PortTaken if "address already in use" in text else RuntimeError
                raise error(f"velollm serve exited with {proc.returncode}:\n{text[-3000:]}")
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return url, log, time.perf_counter() - started
            except httpx.HTTPError:
                pass
            if time.perf_counter() - started > timeout:
                proc.kill()
                raise RuntimeError(f"velollm serve did not become healthy:\n{log.read_text()[-3000:]}")
            time.sleep(0.02)


def stop_serve(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
