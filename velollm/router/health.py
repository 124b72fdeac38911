"""Backend health: passive ejection (connection errors at once, other failures after
`eject_after_failures` in a row), re-admission by the active check (or, with active checks off,
after `readmit_after_s`), and the active check loop itself."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

logger = logging.getLogger(__name__)


class Health:
    """One backend's state: admitted or ejected, and why."""

    def __init__(self, name: str, eject_after_failures: int, readmit_after_s: float,
                 active_checks: bool) -> None:
        self.name = name
        self.eject_after_failures = eject_after_failures
        self.readmit_after_s = readmit_after_s
        self.active_checks = active_checks
        self.ejected = False
        self.reason = ""
        self.ejected_at = 0.0
        self.failures = 0  # consecutive
        self.ejections = 0

    @property
    def admitted(self) -> bool:
        """Requests may go to it (with active checks off, an ejected backend is tried again after a while)."""
        if not self.ejected:
            return True
        return not self.active_checks and time.monotonic() - self.ejected_at >= self.readmit_after_s

    def success(self) -> None:
        self.failures = 0
        if self.ejected and not self.active_checks:
            self._readmit("a request succeeded")

    def failure(self, reason: str, *, unreachable: bool = False) -> None:
        """A request failed; `unreachable` (refused, reset, timed out while connecting) ejects at once."""
        self.failures += 1
        if unreachable or self.failures >= self.eject_after_failures:
            self.eject(reason)

    def eject(self, reason: str) -> None:
        if self.ejected:
            self.ejected_at = time.monotonic()  # with active checks off, wait again before the next try
            return
        self.ejected, self.reason, self.ejected_at = True, reason, time.monotonic()
        self.ejections += 1
        logger.warning("backend %s ejected: %s", self.name, reason)

    def probed(self, ok: bool, reason: str = "") -> None:
        """The active check's verdict."""
        if ok:
            self.failures = 0
            if self.ejected:
                self._readmit("the health check passed")
        else:
            self.eject(f"health check failed: {reason}")

    def _readmit(self, why: str) -> None:
        self.ejected, self.reason = False, ""
        logger.info("backend %s re-admitted (%s)", self.name, why)


Probe = Callable[[], Awaitable[str | None]]  # None: healthy, else why not


class HealthChecker:
    """Runs each backend's probe every `interval_s` (all concurrently), feeding `Health.probed`."""

    def __init__(self, checks: Sequence[tuple[Health, Probe]], interval_s: float) -> None:
        self.checks = list(checks)
        self.interval_s = interval_s

    async def run(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self.interval_s)

    async def check_all(self) -> None:
        await asyncio.gather(*(self._check(health, probe) for health, probe in self.checks))

    @staticmethod
    async def _check(health: Health, probe: Probe) -> None:
        try:
            problem = await probe()
        except Exception as exc:  # noqa: BLE001 (a probe that raises is a failed check, never a dead loop)
            problem = f"{type(exc).__name__}: {exc}"
        health.probed(problem is None, problem or "")
