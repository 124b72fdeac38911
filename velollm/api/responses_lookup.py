"""/v1/responses/{id}: retrieve (a background response as it runs, or its events again), cancel, list input items,
delete. An id this process did not store is looked up on the upstream whose own Responses API stored it
(responses_upstream.relayed_lookup), else it is this process's 404 in OpenAI's format."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from velollm.api.cursor_page import page_args
from velollm.api.handler import AppState, Call, endpoint
from velollm.api.responses import not_found
from velollm.api.responses_background import (
    UNSTORED_MESSAGE,
    events_answer,
    events_gone,
    not_cancellable,
    not_streamable,
    query_flag,
    starting_after,
)
from velollm.api.responses_store import in_store
from velollm.api.responses_upstream import relayed_lookup
from velollm.responses import ResponseStore
from velollm.responses.background import BackgroundRun
from velollm.responses.runner import this_process
from velollm.wire.errors import APIError


async def _relayed(request: Request, state: AppState, response_id: str) -> Response:
    """A lookup of a response this process did not store: the upstream that stored it answers; an id no upstream
    stored through here is this process's 404."""
    answer = await relayed_lookup(request, state, response_id)
    if answer is None:
        raise not_found(response_id)
    return answer


async def _ended(state: AppState, run: BackgroundRun | None, stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stored row; for a run that has ended while its row still says queued or in progress (its end could not
    be stored, responses_background.py), the end the run holds, and once the run has left memory (10 min, 64 runs)
    `failed` with the reason: a row of this process without its run has ended unstored (a client polling for the end
    saw queued for ever). A row another process runs (a store shared by servers) is that process's to end."""
    if stored is None or stored["status"] not in ("queued", "in_progress"):
        return stored
    if run is not None:
        return run.response
    response_id = stored["id"]
    if state.background.holds(response_id):
        return stored
    if await in_store(state, ResponseStore.runner, response_id) != this_process():
        return stored
    return {**stored, "status": "failed", "error": {"code": "server_error", "message": UNSTORED_MESSAGE}}


@endpoint("/v1/responses/{id}")
async def get_response(request: Request, state: AppState, call: Call) -> Response:
    """The stored response; a background one still running as it stands. `stream=true`: a background response's
    events (after `starting_after`), replayed, then followed until it ends (responses_background.py)."""
    response_id = request.path_params["id"]
    stream = query_flag(request.query_params, "stream")
    after = starting_after(request.query_params) if stream else None  # (read only with stream, as OpenAI's)
    run = state.background.get(response_id)
    if run is not None and stream:
        return events_answer(run, after)
    if run is not None and not run.done:
        return JSONResponse(run.snapshot())
    stored = await _ended(state, run, await in_store(state, ResponseStore.get, response_id))
    if stored is None:
        return await _relayed(request, state, response_id)
    if stream:
        raise events_gone(state.background) if stored.get("background") else not_streamable(response_id)
    return JSONResponse(stored)


@endpoint("/v1/responses/{id}/cancel")
async def cancel_response(request: Request, state: AppState, call: Call) -> Response:
    """Cancels a background response in progress: `cancelled`, its engine request aborted. One that has ended is
    answered as it is (cancelling twice is idempotent, as OpenAI's); one not made in the background is a 400; one an
    upstream's own Responses API holds is that upstream's to cancel."""
    response_id = request.path_params["id"]
    run = state.background.get(response_id)
    if run is not None and not run.done:
        await state.background.cancel(run)
        return JSONResponse(run.response)
    stored = await _ended(state, run, await in_store(state, ResponseStore.get, response_id))
    if stored is None:
        return await _relayed(request, state, response_id)
    if not stored.get("background"):
        raise not_cancellable(response_id)
    return JSONResponse(stored)


@endpoint("/v1/responses/{id}/input_items")
async def list_input_items(request: Request, state: AppState, call: Call) -> Response:
    """The input items of a stored response (the earlier turns' inputs and outputs, then its own input),
    a cursor page: `order` (desc by default), `limit` (1-100, default 20), `after` or `before` (an item id:
    the page that follows it, or the one that comes just before it)."""
    response_id = request.path_params["id"]
    stored = await in_store(state, ResponseStore.history, response_id)
    if stored is None:
        return await _relayed(request, state, response_id)
    query = request.query_params
    limit, order = page_args(query, "desc")
    items = stored.input_items if order == "asc" else stored.input_items[::-1]
    ids = [item.get("id") for item in items]
    for cursor in ("after", "before"):
        if query.get(cursor) is not None and query[cursor] not in ids:
            raise APIError(400, f"Invalid {cursor!r}: no input item with id {query[cursor]!r}", param=cursor)
    after, before = query.get("after"), query.get("before")
    items = items[ids.index(after) + 1 if after is not None else 0:ids.index(before) if before is not None else None]
    page = items[-limit:] if before is not None and after is None else items[:limit]
    has_more = len(items) > limit
    return JSONResponse({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                         "last_id": page[-1]["id"] if page else None, "has_more": has_more})


@endpoint("/v1/responses/{id}")
async def delete_response(request: Request, state: AppState, call: Call) -> Response:
    """Deletes a stored response; a background one still running is cancelled first (else its end would store it
    again, and its engine request run on for nothing), and its run dropped (its events replayed its output)."""
    response_id = request.path_params["id"]
    run = state.background.get(response_id)
    if run is not None and not run.done:
        await state.background.cancel(run)
    deleted = await in_store(state, ResponseStore.delete, response_id)
    state.background.forget(response_id)
    if not deleted:
        return await _relayed(request, state, response_id)
    return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})


def routes() -> list[Route]:
    return [Route("/v1/responses/{id}", get_response, methods=["GET"]),
            Route("/v1/responses/{id}/input_items", list_input_items, methods=["GET"]),
            Route("/v1/responses/{id}/cancel", cancel_response, methods=["POST"]),
            Route("/v1/responses/{id}", delete_response, methods=["DELETE"])]
