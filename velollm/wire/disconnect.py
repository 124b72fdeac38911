"""Runs a non-streaming handler's work until the client goes away, then cancels it.

Starlette cancels streaming responses on disconnect by itself; a plain JSON response would otherwise
keep its engine requests running for a client that is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")

STATUS_CLIENT_CLOSED = 499  # nginx's and Ollama's code for "client went away" (nobody reads it: metrics, logs)


class ClientDisconnected(Exception):
    """The client closed the connection before the response was ready."""


async def wait_for_disconnect(receive: Any) -> None:
    """Returns once `receive` (the ASGI receive of a request whose body has been read) says the client left."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def cancel_on_disconnect(receive: Any, work: Awaitable[T]) -> T:
    """Awaits `work`; if the client disconnects first, cancels it and raises ClientDisconnected.

    `receive` is the ASGI receive of a request whose body has already been read.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_for_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        watcher.cancel()
    if task.cancelled():
        raise ClientDisconnected()
    return task.result()
