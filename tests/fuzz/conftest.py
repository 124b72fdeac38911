"""The servers the fuzz suite hits: `velollm serve` on the demo model, and `velollm serve --proxy-only` in
front of it (the proxy path); a watcher that times /health all along."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.fuzz.strategies import EMBEDDER
from tests.serve_process import start_serve, stop_serve

# CI runs a bounded number of examples per route; FUZZ_EXAMPLES=2000 is the long run (tests/fuzz/README.md).
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
HEALTH_BOUND_S = 1.0


@dataclass
class HealthWatch:
    """GET /health every 0.2 s in a thread; the slowest answer (or failure) is what the tests check."""

    url: str
    slowest_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.wait(0.2):
                t0 = time.perf_counter()
                try:
                    status = client.get(f"{self.url}/health").status_code
                    if status != 200:
                        self.failures.append(f"/health answered {status}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"/health failed: {exc!r}")
                self.slowest_s = max(self.slowest_s, time.perf_counter() - t0)

    def __enter__(self) -> HealthWatch:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


@dataclass
class FuzzTarget:
    url: str
    log: Path
    health: HealthWatch


def _serve(tmp: Path, *args: str) -> Iterator[FuzzTarget]:
    proc, url, log, _ = start_serve(tmp, *args)
    try:
        with HealthWatch(url) as health:
            yield FuzzTarget(url, log, health)
    finally:
        stop_serve(proc)


@pytest.fixture(scope="session")
def native(tmp_path_factory) -> Iterator[FuzzTarget]:
    """The demo model and the default embedder (all-MiniLM-L6-v2, served as `minilm`), both pinned
    (keep_alive cannot unload them); small context and queue; loopback."""
    from velollm.embed.resolve import default_model_folder

    yield from _serve(tmp_path_factory.mktemp("fuzz-native"), "--model", "demo", "--served-model-name", "demo",
                      "--model", str(default_model_folder()), "--served-model-name", EMBEDDER, "--no-upstream",
                      "--max-model-len", "256", "--kv-cache-memory", "16MiB", "--max-queue", "16",
                      "--max-request-bytes", "1MiB", "--tool-retries", "0")


@pytest.fixture(scope="session")
def proxy(native, tmp_path_factory) -> Iterator[FuzzTarget]:
    """`--proxy-only` in front of the native server (a second VeloLLM as its Ollama upstream)."""
    yield from _serve(tmp_path_factory.mktemp("fuzz-proxy"), "--proxy-only", "--upstream", native.url)
