"""/health timed from a process of its own (tests/fuzz/health_probe.py), for tests that hold a server to an
answer time while they load it.

A thread in pytest's process would also time that process's own stalls: the test's traffic holding the GIL
(a 10 MB body encoded, six clients' JSON), a full garbage collection of a long session's heap. A server cannot
cause those, and on a loaded CI machine they alone can pass a bound of a second."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class ProbedHealth:
    """`with ProbedHealth(url, log) as health:` polls /health every 0.2 s until the block ends; `mark()` starts
    a window, `window()` waits for an answer begun after it was called and returns the window's answers as
    (seconds, "200" or what failed)."""

    def __init__(self, url: str, log: Path) -> None:
        self.url, self.log = url, log
        self._offset = 0

    def __enter__(self) -> ProbedHealth:
        self.log.write_bytes(b"")
        self._proc = subprocess.Popen([sys.executable, "-m", "tests.fuzz.health_probe", self.url, str(self.log)],
                                      cwd=REPO)
        self._wait_for_lines(1)  # polling: a window opened now is covered from its start
        self.mark()
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.kill()
        self._proc.wait(timeout=15)

    def mark(self) -> None:
        self._offset = len(self._whole_lines())

    def window(self, timeout_s: float = 60.0) -> list[tuple[float, str]]:
        """The answers logged since mark(), once two more are logged: the first may have been asked before this
        call, the second was asked after it (the answer in flight at the window's end is counted)."""
        data = self._wait_for_lines(self._count(self._whole_lines()[self._offset:]) + 2, timeout_s)
        answers = []
        for line in data[self._offset:].decode().splitlines():
            seconds, outcome = line.split(" ", 1)
            answers.append((float(seconds), outcome))
        self.mark()
        return answers

    def _whole_lines(self) -> bytes:
        data = self.log.read_bytes()
        return data[:data.rfind(b"\n") + 1]

    @staticmethod
    def _count(data: bytes) -> int:
        return data.count(b"\n")

    def _wait_for_lines(self, num: int, timeout_s: float = 60.0) -> bytes:
        """The log's whole lines once it holds `num` past the mark (the probe process alive meanwhile)."""
        deadline = time.monotonic() + timeout_s
        while self._count((data := self._whole_lines())[self._offset:]) < num:
            assert self._proc.poll() is None, f"the /health probe exited ({self._proc.returncode})"
            assert time.monotonic() < deadline, f"the /health probe logged {self._count(data)} answers in {timeout_s} s"
            time.sleep(0.05)
        return data
