"""Servers for the API tests: a stub engine behind a real uvicorn (in a thread), and a real
`velollm serve` subprocess on the demo model (skipped until the engine can be imported)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.stub_engine import StubEngine

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerHandle:
    kind: str  # "stub" | "live"
    url: str
    model: str = "demo"
    engine: Any = None  # the stub, for white-box checks
    max_model_len: int = 0
    log: Path | None = None

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, frozenset(labels.items())), 0.0)

    def wait_metric(self, name: str, predicate, timeout: float = 10.0, **labels: str) -> float:
        deadline = time.monotonic() + timeout
        value = self.metric(name, **labels)
        while not predicate(value) and time.monotonic() < deadline:
            time.sleep(0.05)
            value = self.metric(name, **labels)
        return value


class ThreadedServer:
    """uvicorn in a background thread: real sockets, so disconnects are real."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("stub server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def stub_app(engine: StubEngine | None = None, **config: Any):
    from velollm.api.app import create_app
    from velollm.api.server_config import ServerConfig

    config.setdefault("stats_interval_s", 0)
    return create_app(ServerConfig(**config), {"demo": engine or StubEngine()})


@pytest.fixture(scope="session")
def stub_server():
    engine = StubEngine()
    port = free_port()
    with ThreadedServer(stub_app(engine, port=port, max_request_bytes=1 << 20), port):
        yield ServerHandle("stub", f"http://127.0.0.1:{port}", engine=engine, max_model_len=engine.max_model_len)


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "velollm.cli", "serve", *args]


def start_live(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    env = {**os.environ, "VELOLLM_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    env.pop("VELOLLM_API_KEY", None)
    proc = subprocess.Popen(serve_command("--port", str(port), "--kv-cache-memory", "32MiB", "--stats-interval", "1",
                                          *args), cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"velollm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url, log
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"velollm serve did not become healthy:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def stop_live(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("live")
    proc, url, log = start_live(tmp, "--max-model-len", "512", "--max-request-bytes", "1MiB")
    try:
        yield ServerHandle("live", url, max_model_len=512, log=log)
    finally:
        stop_live(proc)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal (exit status -15).
    assert proc.returncode in (0, -15), log.read_text()[-3000:]
    assert "Application shutdown complete" in log.read_text()


@pytest.fixture(params=["stub", "live"])
def server(request) -> ServerHandle:
    return request.getfixturevalue(f"{request.param}_server")
