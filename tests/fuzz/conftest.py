"""The servers the fuzz suite hits: `velollm serve` on the demo model, and `velollm serve --proxy-only` in
front of it (the proxy path); a watcher that times /health all along. Both run on a temporary Ollama store
(store.py; $OLLAMA_MODELS), never the user's: the model-management routes (/api/delete ...) are fuzzed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.fuzz.store import FRONT_ONLY, FuzzStore, build_store
from tests.fuzz.strategies import EMBEDDER
from tests.serve_process import start_serve, stop_serve

# CI runs a bounded number of examples per route; FUZZ_EXAMPLES=2000 is the long run (tests/fuzz/README.md).
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
HEALTH_BOUND_S = 1.0


@dataclass
class HealthWatch:
    """/health polled every 0.2 s by its own process (health_probe.py); `window()` gives the slowest answer
    and the failures since the previous call, so that each test is judged on what happened while it ran."""

    url: str
    log: Path
    slowest_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    _offset: int = 0

    def window(self) -> HealthWatch:
        """The answers logged since the previous window (only whole lines), as a HealthWatch of their own."""
        with open(self.log, "rb") as log:
            log.seek(self._offset)
            data = log.read()
        data = data[:data.rfind(b"\n") + 1]
        self._offset += len(data)
        seen = HealthWatch(self.url, self.log)
        for line in data.decode().splitlines():
            seconds, outcome = line.split(" ", 1)
            seen.slowest_s = max(seen.slowest_s, float(seconds))
            if outcome != "200":
                seen.failures.append(f"/health answered {outcome}")
        return seen

    def __enter__(self) -> HealthWatch:
        self.log.touch()
        self._proc = subprocess.Popen([sys.executable, "-m", "tests.fuzz.health_probe", self.url, str(self.log)],
                                      cwd=Path(__file__).resolve().parents[2])
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.kill()
        self._proc.wait(timeout=15)


@dataclass
class FuzzTarget:
    url: str
    log: Path
    health: HealthWatch


def _serve(tmp: Path, store: FuzzStore, *args: str) -> Iterator[FuzzTarget]:
    proc, url, log, _ = start_serve(tmp, *args, env={"OLLAMA_MODELS": str(store.root)})
    try:
        check_isolated(proc.pid, store)
        with HealthWatch(url, log.with_name(f"{log.stem}-health.log")) as health:
            yield FuzzTarget(url, log, health)
    finally:
        stop_serve(proc)


def check_isolated(pid: int, store: FuzzStore) -> None:
    """Fails the whole session unless the server's $OLLAMA_MODELS is the temporary store (fuzzing /api/delete
    on a real store would destroy models)."""
    seen = psutil.Process(pid).environ().get("OLLAMA_MODELS")
    if seen != str(store.root) or not store.root.is_relative_to(store.base):
        pytest.exit(f"fuzz server {pid} runs on OLLAMA_MODELS={seen!r}, not the temporary store {store.root}: "
                    "refusing to fuzz model management on it", returncode=3)


@pytest.fixture(scope="session")
def fuzz_store(tmp_path_factory) -> Iterator[FuzzStore]:
    """The temporary store; the user's own (~/.ollama/models, where one is) is the same afterwards."""
    from velollm.engine.loader.ollama_store import models_dir

    users = models_dir({"HOME": str(Path.home())})
    before = _listing(users)
    yield build_store(tmp_path_factory.mktemp("fuzz-store"))
    assert _listing(users) == before, f"the fuzz changed the user's Ollama store {users}"


@pytest.fixture(autouse=True, scope="module")
def _pristine_store_per_module(fuzz_store) -> Iterator[None]:
    """Each fuzz module starts on the store as built (FuzzStore.reset)."""
    fuzz_store.reset()
    yield
    fuzz_store.reset()


def _listing(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.glob("manifests/*/*/*/*")} if root.is_dir() else {}


@pytest.fixture(scope="session")
def native(tmp_path_factory, fuzz_store) -> Iterator[FuzzTarget]:
    """The demo model and the default embedder (all-MiniLM-L6-v2, served as `minilm`), both pinned
    (keep_alive cannot unload them); small context and queue; loopback."""
    from velollm.embed.resolve import default_model_folder

    yield from _serve(tmp_path_factory.mktemp("fuzz-native"), fuzz_store, "--model", "demo", "--served-model-name", "demo",
                      "--model", str(default_model_folder()), "--served-model-name", EMBEDDER, "--no-upstream",
                      "--max-model-len", "256", "--kv-cache-memory", "16MiB", "--max-queue", "16",
                      "--max-request-bytes", "1MiB", "--tool-retries", "0")


@pytest.fixture(scope="session")
def proxy(native, tmp_path_factory, fuzz_store) -> Iterator[FuzzTarget]:
    """`--proxy-only` in front of the native server (a second VeloLLM as its Ollama upstream)."""
    yield from _serve(tmp_path_factory.mktemp("fuzz-proxy"), fuzz_store, "--proxy-only", "--upstream", native.url)


@pytest.fixture(scope="session")
def converting_proxy(native, tmp_path_factory, fuzz_store) -> Iterator[FuzzTarget]:
    """`--proxy-only` that takes the native server for an Ollama (`--upstream-kind ollama`): /v1 is converted to
    /api/chat, /api/generate and /api/embed (proxy/openai_via_ollama.py), which `proxy` passes through."""
    yield from _serve(tmp_path_factory.mktemp("fuzz-converting"), fuzz_store, "--proxy-only", "--upstream", native.url,
                      "--upstream-kind", "ollama")


@pytest.fixture(scope="session")
def front_store(tmp_path_factory) -> FuzzStore:
    return build_store(tmp_path_factory.mktemp("fuzz-front-store"), FRONT_ONLY)


@pytest.fixture(scope="session")
def front(native, tmp_path_factory, front_store) -> Iterator[FuzzTarget]:
    """A VeloLLM with its own temporary store in front of the native server (its Ollama upstream): model
    management goes upstream first and falls back on the own store (a name the upstream lacks)."""
    yield from _serve(tmp_path_factory.mktemp("fuzz-front"), front_store, "--upstream", native.url,
                      "--max-model-len", "256", "--kv-cache-memory", "16MiB", "--max-request-bytes", "1MiB")
