"""DrainingServer: uvicorn, with SIGTERM / SIGINT meaning "drain, then stop" (velollm/api/drain.py).

uvicorn alone stops listening at the first signal and cuts whatever still runs after its own
graceful timeout, without an ending the clients can read. Here the first signal starts the drain
(new requests 503, running ones and background responses go on up to the shutdown timeout, then are ended in
their wire format, the background responses stored failed); uvicorn's shutdown starts once the drain is over,
so its timeout never cuts a stream. A second signal cuts the running requests at once; a third is uvicorn's
forced exit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from velollm.api.handler import AppState
from velollm.api.header_deadline import header_deadline_protocol

logger = logging.getLogger(__name__)

KV_SETTLE_S = 2.0  # engines free the blocks of aborted requests on their next step
UVICORN_GRACE_S = 5.0  # uvicorn's own, once the drain is over: idle connections close, cut streams flush


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: AppState, shutdown_timeout_s: float) -> None:
        super().__init__(config)
        self.state = state
        self.drain = state.drain
        self.shutdown_timeout_s = shutdown_timeout_s
        self._signals = 0
        self._drain_task: asyncio.Task | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 2:
            self.drain.cut_now()
        elif self._signals > 2 or not self.started:
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    async def on_tick(self, counter: int) -> bool:
        if self._signals and self._drain_task is None and self.started:
            self._drain_task = asyncio.create_task(self._drain())
        return await super().on_tick(counter)

    async def _drain(self) -> None:
        try:
            started = time.monotonic()
            await self.drain.run(self.shutdown_timeout_s)
            # background responses go on within the same timeout, as requests do; those still running then fail
            left = max(self.shutdown_timeout_s - (time.monotonic() - started), 0.0)
            await self.drain.wait_for(self.state.background.wait(), left)
            await self.state.background.stop_all()
            await self._report_kv_blocks()
        except Exception:  # stopping anyway
            logger.exception("draining failed")
        self.should_exit = True

    async def _report_kv_blocks(self) -> None:
        """Waits (briefly) until the engines have processed the aborts of cut requests, and logs what
        each still holds: 0 when every request was ended properly."""
        deadline = time.monotonic() + KV_SETTLE_S
        while True:
            held = {m.name: m.engine.stats().num_allocated_blocks for m in self.state.models.models()}
            if not any(held.values()) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        for name, num_blocks in held.items():
            logger.info("drained: %s holds %d KV blocks", name, num_blocks)


def make_uvicorn_config(app: Any, host: str, port: int, log_level: str, header_timeout_s: float = 30.0,
                        on_close: Callable[[str], None] | None = None) -> uvicorn.Config:
    """uvicorn's defaults but for the HTTP protocol (header_deadline.py), whose deadline also closes idle
    keep-alive connections (uvicorn's keep-alive timer, set as long, does nothing there). uvicorn's 5 s
    closed keep-alive connections under load: with uvloop, timers run before reads, so an event loop busy for
    seconds with a burst of requests closed a connection whose next request was already in its socket
    (the client's "Server disconnected without sending a response").
    No limit_concurrency: it answers 503 to every connection past N, legitimate or not, where the engine's
    --max-queue already sheds load per model with a Retry-After, and slow or idle clients are closed by the
    header deadline instead. The listen backlog stays uvicorn's 2048 (capped by net.core.somaxconn): a burst
    of a thousand connects waits there, not refused."""
    return uvicorn.Config(app, host=host, port=port, log_config=None, log_level=log_level,
                          timeout_graceful_shutdown=UVICORN_GRACE_S, timeout_keep_alive=header_timeout_s,
                          http=header_deadline_protocol(header_timeout_s, on_close=on_close))
