"""The fuzz suite's /health watcher (conftest.HealthWatch, health_probe.py) against a server that stalls
once: the stall shows in the window it happened in, not in the next; a failing /health is a failure."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.fuzz.conftest import HealthWatch


class _Health(BaseHTTPRequestHandler):
    stall_s = 0.0
    status = 200

    def do_GET(self) -> None:
        time.sleep(type(self).stall_s)
        self.send_response(type(self).status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _wait_lines(watch: HealthWatch, count: int) -> None:
    deadline = time.monotonic() + 20
    while watch.log.read_text().count("\n") < count:
        assert time.monotonic() < deadline, "the probe logged nothing"
        time.sleep(0.05)


def test_window_holds_what_happened_since_the_previous_one(tmp_path: Path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with HealthWatch(f"http://127.0.0.1:{server.server_port}", tmp_path / "health.log") as watch:
            _wait_lines(watch, 3)
            quiet = watch.window()
            assert quiet.slowest_s < 0.5 and not quiet.failures

            _Health.stall_s = 1.2
            seen = watch.log.read_text().count("\n")
            _wait_lines(watch, seen + 2)  # the second answer logged after the change began after it
            _Health.stall_s = 0.0
            _wait_lines(watch, seen + 4)
            stalled = watch.window()
            assert stalled.slowest_s >= 1.0 and not stalled.failures

            _Health.status = 503
            seen = watch.log.read_text().count("\n")
            _wait_lines(watch, seen + 3)
            failing = watch.window()
            assert failing.slowest_s < 0.5 and "/health answered 503" in failing.failures
    finally:
        _Health.stall_s, _Health.status = 0.0, 200
        server.shutdown()
