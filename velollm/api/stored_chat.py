"""Stored chat completions (OpenAI's `store: true` on /v1/chat/completions) and their routes.

`keeper` checks a chat body's `store`, `metadata` and `user` (OpenAI's 400s) and, with `store: true`,
`ChatKeeper.keep` stores the answer as it goes out to the client: a whole body as it is, a stream put
back together (the response cache's capture) and stored before its final `[DONE]`, so that a client
that read the whole stream finds it at once. Native models and upstreams alike: what is stored is what
the client got. An upstream's answer is stored under an id of VeloLLM's own, which replaces the upstream's
in what the client receives (the whole body, or every chunk of a stream): the id the client sees is the one
it retrieves, and stored completions never collide, whatever ids the upstream issues (Ollama's /v1 answers
`chatcmpl-` and a number below 1000, which would have a later completion replace an earlier one). The
store is the ResponseStore's file, opened and used off the event loop as the Responses
routes do (responses_store.in_store), with its retention limits.

Routes: GET /v1/chat/completions (list: after, limit, order, model, metadata[KEY]=VALUE),
GET/POST/DELETE /v1/chat/completions/{id} (retrieve, update metadata, delete) and
GET /v1/chat/completions/{id}/messages (the input messages, a cursor page).
"""

from __future__ import annotations

import copy
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from velollm.api import store_cap
from velollm.api.cursor_page import page_args
from velollm.api.handler import AppState, Call, endpoint, read_json
from velollm.api.responses_store import in_store
from velollm.cache.capture import capture
from velollm.responses import ChatCompletionStore, RowTooLarge, UnknownCursor, stored_bytes
from velollm.wire.errors import APIError
from velollm.wire.framing import SSE_MEDIA_TYPE, sse_data
from velollm.wire.metadata import check_metadata, check_user

logger = logging.getLogger(__name__)

_DONE = b"data: [DONE]"
_T = TypeVar("_T")


async def _in_chat_store(state: AppState, method: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """`method(chat_store, *args, **kwargs)` in a worker thread, the store opened in one too (as the
    Responses routes open it: responses_store.in_store)."""
    return await in_store(state, lambda store: method(store.chat_completions, *args, **kwargs))


@dataclass(frozen=True)
class ChatKeeper:
    """One `store: true` chat request: its input messages and metadata, kept with the answer."""

    state: AppState
    messages: list[Any]
    metadata: dict[str, str]
    hide_usage: bool = False  # the stream's usage chunk was asked for the store only: not the client's

    async def keep(self, answer: Response, *, relayed: bool = False) -> Response:
        """`answer`, storing the completion in it (once it is whole) when it is one. A `relayed` answer (an
        upstream's) gets an id of VeloLLM's own, in the body or in every chunk, before it is stored."""
        if answer.status_code != 200:
            return answer
        own_id = f"chatcmpl-{uuid.uuid4().hex}" if relayed else None
        if isinstance(answer, StreamingResponse):
            answer.body_iterator = self._kept(answer.body_iterator, own_id)
            return answer
        if own_id is not None:
            _rewrite_body(answer, own_id)
        await self._put(capture("chat", bytes(answer.body), answer.media_type or "application/json"))
        return answer

    async def _kept(self, chunks: AsyncIterator[Any], own_id: str | None = None) -> AsyncIterator[Any]:
        raw, pending, stored = bytearray(), b"", False
        by_event = self.hide_usage or own_id is not None  # whole events only: a piece may end mid-event
        try:
            async for data in chunks:
                piece = data if isinstance(data, bytes) else str(data).encode()
                if not by_event:
                    raw += piece
                    stored = await self._store_at_done(raw, len(piece), stored)
                    yield data
                    continue
                *events, pending = (pending + piece).split(b"\n\n")
                events = [_with_id(event, own_id) if own_id is not None else event for event in events]
                whole = b"".join(event + b"\n\n" for event in events)
                raw += whole
                stored = await self._store_at_done(raw, len(whole), stored)
                shown = b"".join(event + b"\n\n" for event in events
                                 if not (self.hide_usage and _usage_only(event)))
                if shown:
                    yield shown
            if pending:  # a last event with no blank line after it
                if own_id is not None:
                    pending = _with_id(pending, own_id)
                raw += pending
                await self._store_at_done(raw, len(pending), stored)
                yield pending
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    async def _store_at_done(self, raw: bytearray, num_new: int, stored: bool) -> bool:
        """Stores the stream once its [DONE] came (in its last `num_new` bytes, or spanning the piece before),
        before the client can read the end and ask for it; whether it is stored."""
        if stored or _DONE not in raw[max(0, len(raw) - num_new - len(_DONE)):]:
            return stored
        await self._put(capture("chat", bytes(raw), SSE_MEDIA_TYPE))
        return True

    async def _put(self, completion: dict[str, Any] | None) -> None:
        if completion is None or not isinstance(completion.get("id"), str):
            return  # an answer that failed or ended early: nothing to keep, as OpenAI keeps nothing
        try:
            await _in_chat_store(self.state, ChatCompletionStore.put, completion, self.messages, self.metadata)
        except RowTooLarge as exc:  # the input fitted (keeper checked it); with the answer it does not
            store_cap.unstored(self.state, "chat_completions", completion["id"], exc)
        except Exception:  # the client has its answer; a store that failed must not take it away
            logger.exception("storing chat completion %s failed", completion.get("id"))


def _rewrite_body(answer: Response, own_id: str) -> None:
    """A whole JSON completion's `id` replaced by `own_id` (its content-length with it)."""
    try:
        body = json.loads(bytes(answer.body))
    except ValueError:
        return
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        return
    body["id"] = own_id
    answer.body = json.dumps(body, ensure_ascii=False).encode()
    answer.headers["content-length"] = str(len(answer.body))


def _with_id(event: bytes, own_id: str) -> bytes:
    """An SSE event whose JSON `data` has an `id`, with `own_id` for it (other events as they are)."""
    if b'"id"' not in event:
        return event
    try:
        chunk = json.loads(sse_data(event))
    except ValueError:
        return event
    if not isinstance(chunk, dict) or not isinstance(chunk.get("id"), str):
        return event
    chunk["id"] = own_id
    fields = [line for line in event.splitlines() if not line.startswith(b"data:")]
    return b"\n".join([*fields, b"data: " + json.dumps(chunk, ensure_ascii=False).encode()])


def _usage_only(event: bytes) -> bool:
    """Whether an SSE event is the usage chunk of a chat stream (no choices, a usage)."""
    payload = sse_data(event)
    if not payload.startswith(b"{") or b'"usage"' not in payload:
        return False
    try:
        chunk = json.loads(payload)
    except ValueError:
        return False
    return isinstance(chunk, dict) and chunk.get("choices") == [] and bool(chunk.get("usage"))


def keeper(state: AppState, body: dict[str, Any]) -> ChatKeeper | None:
    """The keeper of a chat body with `store: true` (None without); a 400 for a `store`, `metadata` or
    `user` of the wrong type or beyond OpenAI's limits, stored or not.

    A stream stored without `stream_options` gets `include_usage` added to `body` (the completion is
    stored with its usage, as OpenAI's are), and the usage chunk is kept from the client, who did not
    ask for it. Input messages and metadata already over the store's row cap are a 400 (store_cap.py)."""
    store = body.get("store")
    if store is not None and not isinstance(store, bool):
        raise APIError(400, f"Invalid type for 'store': expected a boolean, but got {type(store).__name__} instead.",
                       param="store", code="invalid_type")
    metadata = check_metadata(body.get("metadata"))
    check_user(body.get("user"))
    if not store:
        # OpenAI refuses metadata without store ("only allowed when 'store' is enabled"); clients that
        # tag every request (qwen-code, langchaingo's WithMetadata, Claude Code through converters) send
        # it so to local servers, which ignore it: accepted and ignored here too.
        return None
    messages = body.get("messages") or []
    num_bytes = stored_bytes(messages, metadata)
    if store_cap.over_cap(state, num_bytes):
        raise store_cap.refuse(state, "chat_completions", num_bytes)
    hide_usage = body.get("stream") is True and body.get("stream_options") is None
    if hide_usage:
        body["stream_options"] = {"include_usage": True}
    return ChatKeeper(state, copy.deepcopy(messages), metadata, hide_usage)


def _not_found(completion_id: str) -> APIError:
    return APIError(404, f"Chat completion with id '{completion_id}' not found.", param="completion_id")


def _page_args(request: Request) -> tuple[int, str]:
    """`limit` and `order` (asc, OpenAI's default here) of a list request."""
    return page_args(request.query_params, "asc")


def _page(data: list[dict[str, Any]], has_more: bool) -> JSONResponse:
    return JSONResponse({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": has_more})


def _metadata_filter(request: Request) -> dict[str, str]:
    """`metadata[KEY]=VALUE` query parameters (how the openai SDK sends the `metadata` filter)."""
    return {key[9:-1]: value for key, value in request.query_params.multi_items()
            if key.startswith("metadata[") and key.endswith("]")}


@endpoint("/v1/chat/completions (list)")
async def list_completions(request: Request, state: AppState, call: Call) -> Response:
    limit, order = _page_args(request)
    after = request.query_params.get("after")
    try:
        page = await _in_chat_store(state, ChatCompletionStore.list, limit=limit, order=order, after=after,
                               model=request.query_params.get("model"), metadata=_metadata_filter(request))
    except UnknownCursor:
        raise APIError(400, f"Invalid 'after': no stored chat completion with id {after!r}", param="after") from None
    return _page(page.data, page.has_more)


@endpoint("/v1/chat/completions/{id}")
async def get_completion(request: Request, state: AppState, call: Call) -> Response:
    completion_id = request.path_params["id"]
    stored = await _in_chat_store(state, ChatCompletionStore.get, completion_id)
    if stored is None:
        raise _not_found(completion_id)
    return JSONResponse(stored)


@endpoint("/v1/chat/completions/{id}")
async def update_completion(request: Request, state: AppState, call: Call) -> Response:
    """Only `metadata` can change (OpenAI's rule); null clears it."""
    completion_id = request.path_params["id"]
    body = await read_json(request)
    if "metadata" not in body:
        raise APIError(400, "Missing required parameter: 'metadata'.", param="metadata", code="missing_required_parameter")
    unknown = sorted(set(body) - {"metadata"})
    if unknown:
        raise APIError(400, f"Unrecognized request argument supplied: {unknown[0]} (only metadata can be updated)",
                       param=unknown[0])
    metadata = check_metadata(body["metadata"])
    stored = await _in_chat_store(state, ChatCompletionStore.update_metadata, completion_id, metadata)
    if stored is None:
        raise _not_found(completion_id)
    return JSONResponse(stored)


@endpoint("/v1/chat/completions/{id}")
async def delete_completion(request: Request, state: AppState, call: Call) -> Response:
    completion_id = request.path_params["id"]
    if not await _in_chat_store(state, ChatCompletionStore.delete, completion_id):
        raise _not_found(completion_id)
    return JSONResponse({"object": "chat.completion.deleted", "id": completion_id, "deleted": True})


def message_object(completion_id: str, index: int, message: Any) -> dict[str, Any]:
    """An input message as OpenAI lists it: an id, and content parts beside their text when it had parts."""
    message = dict(message) if isinstance(message, dict) else {"content": message}
    content = message.pop("content", None)
    out: dict[str, Any] = {"id": f"{completion_id}-{index}", **message, "content": content, "content_parts": None}
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        out["content"] = "".join(t for t in texts if isinstance(t, str)) or None
        out["content_parts"] = content
    out.setdefault("name", None)
    return out


@endpoint("/v1/chat/completions/{id}/messages")
async def list_messages(request: Request, state: AppState, call: Call) -> Response:
    completion_id = request.path_params["id"]
    limit, order = _page_args(request)
    messages = await _in_chat_store(state, ChatCompletionStore.messages, completion_id)
    if messages is None:
        raise _not_found(completion_id)
    items = [message_object(completion_id, i, m) for i, m in enumerate(messages)]
    if order == "desc":
        items.reverse()
    after = request.query_params.get("after")
    if after is not None:
        ids = [m["id"] for m in items]
        if after not in ids:
            raise APIError(400, f"Invalid 'after': no message with id {after!r}", param="after")
        items = items[ids.index(after) + 1:]
    return _page(items[:limit], len(items) > limit)


def routes() -> list[Route]:
    return [Route("/v1/chat/completions", list_completions, methods=["GET"]),
            Route("/v1/chat/completions/{id}", get_completion, methods=["GET"]),
            Route("/v1/chat/completions/{id}", update_completion, methods=["POST"]),
            Route("/v1/chat/completions/{id}", delete_completion, methods=["DELETE"]),
            Route("/v1/chat/completions/{id}/messages", list_messages, methods=["GET"])]
