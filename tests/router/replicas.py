"""Real backends for the router tests: `velollm serve` demo-model replicas as subprocesses (restartable
on their port, for failover), and the router itself, in-process (a thread) or as `velollm serve --config`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.serve_process import BIND_ATTEMPTS, REPO, free_port

REPLICA_ARGS = ("--max-model-len", "512", "--kv-cache-memory", "16MiB", "--max-num-seqs", "8", "--no-upstream")


class Replica:
    """One `velollm serve` serving the demo model, on a fixed port so it can come back after a kill. `env`: more
    environment for the process (a test hook's switch; its PYTHONPATH goes before the repository)."""

    def __init__(self, folder: Path, *args: str, env: Mapping[str, str] | None = None) -> None:
        self.folder = folder
        self.port = free_port()
        self.args = args or REPLICA_ARGS
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.served = False  # healthy once: its port is known to a router, kept across restarts
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Replica:
        extra = dict(self.env)
        pythonpath = os.pathsep.join(p for p in (extra.pop("PYTHONPATH", ""), str(REPO),
                                                 os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, **extra, "PYTHONPATH": pythonpath, "VELOLLM_CACHE": str(self.folder.parent / "cache")}
        env.pop("OLLAMA_HOST", None)
        env.pop("VELOLLM_API_KEY", None)
        log = (self.folder / f"serve-{self.port}.log").open("a")
        self.proc = subprocess.Popen([sys.executable, "-m", "velollm.cli", "serve", "--port", str(self.port),
                                      "--stats-interval", "0", *self.args], cwd=REPO, env=env, stdout=log,
                                     stderr=subprocess.STDOUT)
        return self

    def wait_healthy(self, timeout: float = 180.0) -> Replica:
        """Waits for /health; a first start whose port was taken meanwhile (free_port() is only free when asked:
        any outgoing connection may get it from the kernel while the replica imports torch) starts again on
        another port, at most BIND_ATTEMPTS times, as serve_process.start_serve does."""
        deadline = time.monotonic() + timeout
        attempts = 1
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                if (not self.served and attempts < BIND_ATTEMPTS and self.proc is not None
                        and "address already in use" in self.log_tail()):
                    attempts += 1
                    self.port = free_port()
                    self.start()
                    continue
                raise RuntimeError(f"replica on {self.port} exited:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    self.served = True
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"replica on {self.port} did not become healthy:\n{self.log_tail()}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def log_tail(self) -> str:
        log = self.folder / f"serve-{self.port}.log"  # a restart on its port appends to it
        return log.read_text()[-3000:] if log.exists() else ""


def start_replicas(folder: Path, n: int, *args: str) -> list[Replica]:
    """n replicas started together (they import torch in parallel), each healthy on return."""
    replicas = [Replica(folder / f"r{i}", *args).start() for i in range(n)]
    try:
        return [r.wait_healthy() for r in replicas]
    except BaseException:
        for r in replicas:
            r.stop()
        raise


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)  # a TOML basic string or number


# The health checks' timeout where a test keeps its replicas busy on a shared CI machine: a /health answered after the
# default 1 s there is load, not a fault (a replica in the middle of a burst was ejected so, and the burst got 503s).
BUSY_HEALTH_TIMEOUT_S = 10.0


def config_toml(backends: Sequence[Mapping[str, Any]], **router: Any) -> str:
    """A `--config` file: the `[router]` keys given, then one `[[backends]]` table per mapping."""
    lines = ["[router]", *(f"{k} = {_toml_value(v)}" for k, v in router.items())] if router else []
    for backend in backends:
        lines += ["[[backends]]", *(f"{k} = {_toml_value(v)}" for k, v in backend.items())]
    return "\n".join(lines) + "\n"


def replica_backends(replicas: Sequence[Replica], names: Sequence[str] = ("a", "b"),
                     kind: str = "velollm") -> list[dict[str, Any]]:
    """One `[[backends]]` entry per replica (spoken to as `kind`), named in order."""
    return [{"name": name, "url": r.url, "kind": kind} for name, r in zip(names, replicas)]


def router_app(toml: str, tmp_path: Path, relayed: Any = None) -> Any:
    """The real API app with no native model and a Router built from `toml` (as `velollm serve --config`);
    `relayed`: its RelayedResponses (one kept on disk, as `velollm serve` makes it)."""
    from velollm.api.app import create_app
    from velollm.api.server_config import ServerConfig
    from velollm.router.config import load_config
    from velollm.router.router import Router

    path = tmp_path / "velollm.toml"
    path.write_text(toml)
    routing = load_config(path)
    return create_app(ServerConfig(models=(), proxy_only=True, stats_interval_s=0, config_file=routing), engines={},
                      upstream=Router(routing, relayed))


def assert_one_label_set_per_family(text: str) -> None:
    """Every family on a /metrics page has one set of label names (what Prometheus' clients declare)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        label_sets = {frozenset(s.labels) - {"le", "quantile"} for s in family.samples}
        assert len(label_sets) <= 1, f"{family.name} mixes label sets {label_sets}"


def metric(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from a Prometheus text page (labels matched exactly), or None."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{want}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return None
