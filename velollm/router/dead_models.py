"""DeadModels: the models of one backend whose engine died while the backend still serves others.

A VeloLLM runs one engine per model; one engine dying (its requests answer 503 engine_dead, or a stream it runs
ends with that error) leaves the others serving. Its /health then answers 503 with the dead engines' models in
`dead`. When the backend serves other models too, only those models' requests go elsewhere (Router.forward asks
`Backend.admitted_for`); a backend whose every model is dead is ejected as a whole (velollm/router/health.py).
The active check replaces the set with its /health's `dead` list each time (an on-demand model's dead engine is
unloaded once its requests end, and loads afresh at the next one: gone from the list); with active checks off, a
mark lapses after `readmit_after_s`, as an ejection does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from velollm.wire.names import name_key

logger = logging.getLogger(__name__)


class DeadModels:
    def __init__(self, backend: str, readmit_after_s: float, active_checks: bool) -> None:
        self.backend = backend
        self.readmit_after_s = readmit_after_s
        self.active_checks = active_checks
        self._dead: dict[str, tuple[str, float]] = {}  # name key -> (the name as reported, monotonic time marked)

    def mark(self, name: str, reason: str) -> None:
        if name_key(name) not in self._dead:
            logger.warning("backend %s: model %r taken out of its rotation: %s", self.backend, name, reason)
        self._dead[name_key(name)] = (name, time.monotonic())

    def replace(self, names: Iterable[str]) -> None:
        """The active check's list: exactly these models are dead now."""
        now = {name_key(n): n for n in names}
        for key, (name, _) in list(self._dead.items()):
            if key not in now:
                del self._dead[key]
                logger.info("backend %s: model %r back in its rotation (its health check no longer names it)",
                            self.backend, name)
        for key, name in now.items():
            if key not in self._dead:
                self.mark(name, "its health check names its engine dead")

    def has(self, name: str) -> bool:
        hit = self._dead.get(name_key(name))
        if hit is None:
            return False
        if not self.active_checks and time.monotonic() - hit[1] >= self.readmit_after_s:
            del self._dead[name_key(name)]  # tried again, as an ejected backend is
            return False
        return True

    def names(self) -> list[str]:
        return [name for key, (name, _) in list(self._dead.items()) if self.has(name)]
