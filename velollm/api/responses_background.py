"""Background responses (`background: true` on /v1/responses), as OpenAI and vLLM serve them.

The create stores the response `queued` and answers at once (or, with `stream`, streams its events); the answer
runs on as a task of the server (velollm/responses/background.py), not of the HTTP request: a client that leaves
cancels nothing. Its engine request (or upstream chat stream) was started by the create, so a 400 or a full queue
is still the create's answer. `GET /v1/responses/{id}` shows it in progress (the output so far), then as stored;
`?stream=true&starting_after=N` replays its events after N, then follows the new ones. `POST .../cancel` stops it:
`cancelled`, with what it said so far, its engine request aborted (its KV blocks freed); its stream ends with
`response.incomplete` holding the cancelled response (event_stream.ResponseEventStream.cancel).

At shutdown the runs in flight end `failed` (server_error: the server stopped), stored so; a row a process left
queued or in progress reads as failed in the same way when a store is next opened and that process is gone (it
was killed; velollm/responses/store.py, runner.py: servers sharing the file leave each other's runs alone): no
response says in_progress with nothing running it.

A run's end whose store write fails with a store error (sqlite's `database is locked`; not RowTooLarge, which
responses.py's keep handles) is tried once more (keep_end); if that fails too, the response ends `failed`
(server_error, "the response could not be stored"), its events so, and that is stored; if even that write fails,
the run holds its end, and GET and cancel answer it from there while the run is kept; once it has left memory, a
row of this process still queued or in progress with no run here (BackgroundRuns.holds; the row names its runner)
reads `failed` with that reason (responses_lookup._ended), and the store fails it for good when next opened after
this process is gone, as a killed server's rows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from starlette.responses import JSONResponse, Response

from velollm.api import store_cap
from velollm.api.handler import AppState
from velollm.responses import ResponseEventStream, ResponseShell, ResponsesRequest, sse_frame
from velollm.responses.background import BackgroundRun, BackgroundRuns, EventsGone
from velollm.responses.store import INTERRUPTED
from velollm.wire.errors import APIError
from velollm.wire.framing import SSE_MEDIA_TYPE
from velollm.wire.streaming import streaming_response

logger = logging.getLogger(__name__)

SHUTDOWN_MESSAGE = INTERRUPTED["message"]  # as a row left unfinished by a killed server reads
UNSTORED_MESSAGE = "the response could not be stored"


class Turn(Protocol):
    """What api/responses.py's _Turn gives a background run."""

    req: ResponsesRequest
    shell: ResponseShell

    async def keep(self, response: dict[str, Any]) -> None: ...

    def answer(self, stream: ResponseEventStream, chunks: AsyncIterator[dict[str, Any]],
               on_final: Callable[[], None]) -> AsyncIterator[dict[str, Any]]: ...


async def _nothing() -> None:
    return None


async def run_in_background(state: AppState, turn: Turn, chunks: AsyncIterator[dict[str, Any]],
                            close: Callable[[], Awaitable[None]] = _nothing) -> Response:
    """The create's answer for a background response whose chat answer comes as `chunks` (`close` ends its
    source: the engine request): stored queued, then run by the server."""
    queued = turn.shell.build("queued")
    state.background.reserve(queued["id"])  # a GET while the row is written finds it queued, not orphaned
    try:
        await turn.keep(queued)  # GET and cancel find it from now on
    except BaseException:
        state.background.release(queued["id"])
        await _close(chunks, close)
        raise
    run = BackgroundRun(queued)
    stream = ResponseEventStream(turn.shell)
    run.snapshot = stream.snapshot

    async def work(run: BackgroundRun) -> None:
        await _work(state, turn, stream, chunks, close, run)

    state.background.start(run, work)
    if turn.req.stream:
        return streaming_response(run.frames(), SSE_MEDIA_TYPE)
    return JSONResponse(queued)


async def _close(chunks: AsyncIterator[dict[str, Any]], close: Callable[[], Awaitable[None]]) -> None:
    try:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    finally:
        await close()


async def _work(state: AppState, turn: Turn, stream: ResponseEventStream, chunks: AsyncIterator[dict[str, Any]],
                close: Callable[[], Awaitable[None]], run: BackgroundRun) -> None:
    def final() -> None:
        run.finishing = True

    try:
        try:
            async for event in turn.answer(stream, chunks, final):
                run.add(event)
        finally:
            await _close(chunks, close)  # the engine request aborted (its blocks freed), also when cancelled
    except asyncio.CancelledError:
        run.finishing = True  # ending now: a second cancel (a stop at shutdown) must not cut the storing
        if run.stop_reason == "shutdown":
            events = stream.fail(SHUTDOWN_MESSAGE, "server_error")
        else:
            events = stream.cancel()
        if not await keep_end(turn.keep, stream.response):  # the run holds it (the module)
            store_cap.write_failed(state, run.id)
        for event in events:  # with run.finish below, no await between: a GET on seeing them finds the end
            run.add(event)
    run.finish(stream.response)


async def keep_end(keep: Callable[[dict[str, Any]], Awaitable[None]], response: dict[str, Any]) -> bool:
    """`keep(response)`, the end of an answer, tried once more on an error (a store locked a while): False, logged,
    when neither write stored it (the caller then ends it failed, or a background run holds it)."""
    for attempt in (1, 2):
        try:
            await keep(response)
            return True
        except Exception:  # said in the log; what stands in for the row is the caller's
            logger.exception("response %s (%s) could not be stored (try %d of 2)", response["id"],
                             response["status"], attempt)
    return False


def query_flag(query: Any, name: str) -> bool:
    value = query.get(name)
    if value is None or value.lower() in ("false", "0"):
        return False
    if value.lower() in ("true", "1"):
        return True
    raise APIError(400, f"Invalid '{name}': expected a boolean, got {value!r:.40}", param=name)


def starting_after(query: Any) -> int | None:
    value = query.get("starting_after")
    if value is None:
        return None
    try:
        after = int(value)
    except ValueError:
        raise APIError(400, f"Invalid 'starting_after': expected an integer, got {value!r:.40}",
                       param="starting_after") from None
    if after < -1:  # sequence numbers start at 0: below -1 is no event (it read as events no longer held)
        raise APIError(400, f"Invalid 'starting_after': expected a sequence number (0 or more; -1 or none for "
                            f"every event), got {after}", param="starting_after")
    return after


def events_answer(run: BackgroundRun, after: int | None) -> Response:
    """The run's events after `after` (all without it), then those to come: SSE until the run ends."""
    try:
        run.check_resumable(after)
    except EventsGone as exc:
        raise APIError(400, f"Invalid 'starting_after': {exc}", param="starting_after") from exc
    return streaming_response(_frames(run, after), SSE_MEDIA_TYPE)


async def _frames(run: BackgroundRun, after: int | None) -> AsyncIterator[bytes]:
    try:
        async for frame in run.frames(after):
            yield frame
    except EventsGone as exc:  # a reader so slow that the run's cap let its next events go
        # numbered as the first event it missed: every streamed event has a sequence_number (the SDK's error event
        # requires one), and the stream it read stays unbroken up to here
        yield sse_frame({"type": "error", "sequence_number": exc.first_missing, "code": "events_dropped",
                         "message": str(exc), "param": None})


def not_streamable(response_id: str) -> APIError:
    return APIError(400, f"Response '{response_id}' was not created with background=true: only a background "
                         "response's events can be streamed again; retrieve it without stream.", param="stream")


def events_gone(runs: BackgroundRuns) -> APIError:
    """A stream asked of a background response whose events have been let go (background.py's limits): OpenAI's
    400 for a stream asked too late ("This response can no longer be streamed because it is more than 5 minutes
    old", openai/openai-python#2828), with our reason. Not its events made again from the stored object: their
    sequence numbers would not be the ones a client resuming after `starting_after` counted."""
    return APIError(400, f"This response can no longer be streamed because its events are no longer held: they are "
                         f"kept {runs.keep_s / 60:g} minutes after a background response ends, and for the last "
                         f"{runs.keep_finished} to end. Retrieve it without stream.", param="stream")


def not_cancellable(response_id: str) -> APIError:
    return APIError(400, f"Response '{response_id}' was not created with background=true: only background responses "
                         "can be cancelled.", param=None)
