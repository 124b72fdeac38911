"""The /health poller the fuzz servers are watched by, as its own process (`python -m tests.fuzz.health_probe
URL LOG`): GET /health every 0.2 s, one line per answer appended to LOG (`<seconds> <status or error>`).

It runs outside pytest's process on purpose: there a thread's timing also counts the test process's own
stalls (a full garbage collection of a session's heap, a C call holding the GIL while the thread waits for
its answer), which a server cannot cause."""

from __future__ import annotations

import os
import sys
import time

import httpx

PERIOD_S = 0.2


def main(url: str, log_path: str) -> None:
    parent = os.getppid()
    with open(log_path, "a", buffering=1) as log, httpx.Client(timeout=10) as client:
        while os.getppid() == parent:  # ends with the test session, even one killed
            t0 = time.perf_counter()
            try:
                outcome = str(client.get(f"{url}/health").status_code)
            except httpx.HTTPError as exc:
                outcome = f"failed:{type(exc).__name__}:{exc}".replace("\n", " ")
            log.write(f"{time.perf_counter() - t0:.4f} {outcome}\n")
            time.sleep(PERIOD_S)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
