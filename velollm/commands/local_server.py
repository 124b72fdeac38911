"""`velollm run` without a server: `serve` in a thread of this process, on a free loopback port, with
the model's loading drawn as a progress bar."""

from __future__ import annotations

import argparse
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from velollm.engine.loader import progress as load_progress

_START_TIMEOUT_S = 600.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _ProgressHandler(logging.Handler):
    """Draws the LoadProgress records of the weight stream on a rich progress bar."""

    def __init__(self, bar: Any) -> None:
        super().__init__()
        self.bar = bar
        self.tasks: dict[str, Any] = {}

    def emit(self, record: logging.LogRecord) -> None:
        p = getattr(record, "load_progress", None)
        if p is None:
            return
        if p.model not in self.tasks:
            self.tasks[p.model] = self.bar.add_task(f"loading {p.model}", total=1.0, rate="")
        rate = f"{p.num_tensors} tensors, {p.num_bytes / 1e6:,.0f} MB, {p.bytes_per_s / 1e6:,.0f} MB/s"
        self.bar.update(self.tasks[p.model], completed=p.fraction or 0.0, rate=rate)


@contextmanager
def load_progress_bar() -> Iterator[None]:
    """While open, model loads in this process show as a progress bar on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    logger = load_progress.logger
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                  TextColumn("{task.fields[rate]}"), console=Console(stderr=True)) as bar:
        handler = _ProgressHandler(bar)
        level, propagate = logger.level, logger.propagate
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


class LocalServer:
    """`velollm serve --model MODEL` on 127.0.0.1:<free port>, in a daemon thread."""

    def __init__(self, model: str, serve_args: list[str] | None = None) -> None:
        self.model = model
        self.serve_args = serve_args or []
        self.server: Any = None
        self.failed: list[BaseException] = []
        self.thread: threading.Thread | None = None

    def start(self) -> str:
        """Start, wait until the model is loaded, and return the base URL. Raises RuntimeError if it fails."""
        import os

        import httpx

        from velollm.commands.serve import add_parser, build_config, make_server
        from velollm.proxy.options import upstream_config

        parser = argparse.ArgumentParser()
        add_parser(parser.add_subparsers())
        port = _free_port()
        args = parser.parse_args(["serve", "--model", self.model, "--port", str(port), "--stats-interval", "0",
                                  *self.serve_args])
        env = dict(os.environ)
        config = build_config(args, env)
        self.server, self.failed = make_server(config, upstream_config(args, env), "warning")
        self.thread = threading.Thread(target=self.server.run, name="velollm-local-server", daemon=True)
        self.thread.start()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + _START_TIMEOUT_S
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.failed or not self.thread.is_alive():
                    reason = self.failed[0] if self.failed else "the server stopped"
                    raise RuntimeError(f"cannot run {self.model}: {reason}")
                try:
                    if client.get(f"{url}/health").status_code == 200:
                        return url
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"{self.model} did not load within {_START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=10)
