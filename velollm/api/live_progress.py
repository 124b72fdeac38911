"""An Ollama progress stream sent while a store operation still runs in its worker thread (quantizing a model
takes minutes): the lines the worker emits go out as they come, then the lines it returns.

Until the first line is emitted nothing is sent, so a request the worker refuses while checking it is still an
ordinary error answer with its status (400, 404); a failure after that ends the 200 stream with Ollama's
`{"error"}` line, as Ollama's own create stream ends. A client that leaves (`ollama create -q` interrupted)
stops the work at its next emitted line: `emit` raises ClientGone there, in the worker's thread, so the worker
unwinds as from any failure (a quantization removes its temporary blob and writes no manifest). That holds
from the start, not only once the stream is open: until the first line (and, for an answer that is not
streamed, until the work ends) the request's `receive` is watched for the client's disconnect, which stops the
work the same way; the request is then answered 499 (nobody reads it). With `stream=False` the emitted lines
are dropped (the answer is the last line alone), but `emit` still checks that the client is there.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.responses import Response
from starlette.types import Receive

from velollm.wire.disconnect import ClientDisconnected, wait_for_disconnect
from velollm.wire.errors import ollama_stream_error, to_api_error
from velollm.wire.framing import NDJSON_MEDIA_TYPE, ndjson_line
from velollm.wire.pull_answer import progress_response
from velollm.wire.streaming import streaming_response

logger = logging.getLogger(__name__)

Line = dict[str, Any]
Emit = Callable[[Line], None]


class ClientGone(Exception):
    """Raised by `emit` once the client has stopped reading: the work is no longer wanted."""


async def live_progress(work: Callable[[Emit], Awaitable[list[Line]]], finish: Callable[[], None],
                        receive: Receive | None = None, stream: bool = True) -> Response:
    """`work(emit)` run to its first emitted line (or its end; to its end when not `stream`); `finish()` once it
    is over, whatever happened. `emit` may be called from any thread. `receive` (the request's, its body read):
    a disconnect seen there before the answer starts stops the work and raises ClientDisconnected."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Line] = asyncio.Queue()
    gone = threading.Event()

    def emit(line: Line) -> None:
        if gone.is_set():
            raise ClientGone("the client stopped reading the progress")
        if stream:
            loop.call_soon_threadsafe(queue.put_nowait, line)
    task = asyncio.ensure_future(work(emit))
    first = asyncio.ensure_future(queue.get())
    left = asyncio.ensure_future(wait_for_disconnect(receive) if receive is not None else asyncio.Event().wait())
    try:
        await asyncio.wait({task, first, left}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        left.cancel()
    if left.done() and not left.cancelled() and not task.done():  # the client left before a line was sent
        first.cancel()
        gone.set()
        task.add_done_callback(lambda done: _after_gone(done, finish))
        raise ClientDisconnected()
    if not first.done():  # over before it had anything to say: an ordinary answer (or error)
        first.cancel()
        try:
            return progress_response(task.result(), stream)
        finally:
            finish()
    # the project's streaming response: the generator is closed when the client leaves (its finally sets
    # `gone`, which stops the work), and the stream headers keep proxies from buffering the progress
    return streaming_response(_lines(first.result(), queue, task, finish, gone), NDJSON_MEDIA_TYPE)


async def _lines(first: Line, queue: asyncio.Queue[Line], task: asyncio.Future[list[Line]],
                 finish: Callable[[], None], gone: threading.Event) -> AsyncIterator[bytes]:
    try:
        yield ndjson_line(first)
        while True:
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                break
            yield ndjson_line(getter.result())
        while not queue.empty():  # emitted before the worker returned
            yield ndjson_line(queue.get_nowait())
        try:
            rest = task.result()
        except Exception as exc:  # the 200 went out: the error ends the stream
            error = to_api_error(exc)
            if error.status >= 500:
                logger.error("store operation failed after its progress stream began: %s", exc, exc_info=exc)
            rest = [ollama_stream_error(error)]
        for line in rest:
            yield ndjson_line(line)
    finally:  # (the client may have gone: the worker stops at its next line, and finish waits for it)
        if task.done():
            finish()
        else:
            gone.set()
            task.add_done_callback(lambda done: _after_gone(done, finish))


def _after_gone(task: asyncio.Future[list[Line]], finish: Callable[[], None]) -> None:
    """`finish()` once the worker of a stream nobody reads any more has ended; how it ended goes to the log."""
    try:
        if not task.cancelled() and task.exception() is not None and not isinstance(task.exception(), ClientGone):
            logger.warning("store operation failed after its client left: %s", task.exception())
        elif not task.cancelled() and isinstance(task.exception(), ClientGone):
            logger.info("store operation stopped: its client left")
    finally:
        finish()
