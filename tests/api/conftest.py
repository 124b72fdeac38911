"""Servers for the API tests: a stub engine behind a real uvicorn (in a thread), and a real
`velollm serve` subprocess on the demo model."""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.stub_engine import StubEngine

from tests.serve_process import free_port, start_serve, stop_serve  # noqa: F401 (re-exported to tests)


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


def start_live(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, str, Path]:
    """`velollm serve` with a small KV cache and a 1 s stats interval (so the rate gauges move)."""
    proc, url, log, _ = start_serve(tmp_path, "--kv-cache-memory", "32MiB", "--stats-interval", "1", *args)
    return proc, url, log


stop_live = stop_serve


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
