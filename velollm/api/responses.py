"""/v1/responses (OpenAI's Responses API): create (the id lookups are responses_lookup.py's; a background create,
the answer run by the server and polled or followed, responses_background.py's).

A create request is routed by its model first. An upstream that has its own Responses API gets the
request as sent, and keeps the response: its id lookups and a create continuing it are that upstream's
(the gateway remembers who stored which id: velollm/proxy/relayed_responses.py); otherwise (a native model, or an
upstream with chat only) the request becomes a chat completion (velollm/responses), run natively through the same
path as /v1/chat/completions or asked of the upstream's chat route, and its answer becomes the Response object or
the typed stream events. With `store` (the default) the response and its conversation are kept in the ResponseStore,
so that `previous_response_id` continues it and `GET /v1/responses/{id}` returns it; one over the store's row cap
is not (store_cap.py: a 400 when `store: true` was sent and the input alone is over, else `store: false`). One the
store fails to write (tried twice) is answered failed, its output kept (_Turn.kept, _Turn.answer).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from velollm.api import store_cap
from velollm.api.handler import (
    STATUS_CLIENT_CLOSED,
    AppState,
    Call,
    endpoint,
    forward_or_local,
    parse_off_loop,
    read_json,
    route,
)
from velollm.api.native_chat import prepare_chat, stream_chunks, whole_body
from velollm.api.protocol_openai import model_of, parse_chat_request
from velollm.api.responses_background import UNSTORED_MESSAGE, keep_end, run_in_background
from velollm.api.responses_store import in_store
from velollm.api.responses_upstream import (
    NO_RESPONSES_API,
    answer_bytes,
    asks_own_api,
    chat_target,
    sse_chunks,
    upstream_holding,
)
from velollm.api.served_model import ServedModel
from velollm.api.targets import NativeTarget, UpstreamTarget
from velollm.cache.replay import take_hit
from velollm.errors import InvalidRequest
from velollm.responses import (
    History,
    ResponseEventStream,
    ResponseShell,
    ResponsesRequest,
    ResponseStore,
    RowTooLarge,
    chat_body,
    conversation,
    input_item_objects,
    parse_responses_request,
    replay_chunks,
    sse_frame,
    stored_bytes,
)
from velollm.wire.disconnect import cancel_on_disconnect
from velollm.wire.errors import APIError, error_code, error_message, to_api_error
from velollm.wire.framing import SSE_MEDIA_TYPE
from velollm.wire.streaming import streaming_response

logger = logging.getLogger(__name__)


def not_found(response_id: str, param: str | None = None) -> APIError:
    if param is not None:
        return APIError(400, f"Previous response with id '{response_id}' not found.", param=param,
                        code="previous_response_not_found")
    return APIError(404, f"Response with id '{response_id}' not found.")


class _Turn:
    """One create request being answered: its conversation, and what to store when it is done. `store_asked`:
    the request sent `store: true` (not only by default), so an input over the store's row cap is a 400."""

    def __init__(self, state: AppState, req: ResponsesRequest, previous: History | None = None,
                 store_asked: bool = False) -> None:
        self.state, self.previous = state, previous
        self.shell = ResponseShell(req)
        if req.store:
            num_bytes = stored_bytes(self.shell.build("in_progress"), *input_item_objects(req.input))
            if store_cap.over_cap(state, num_bytes):
                if store_asked or req.background:  # a background response is read back from the store only
                    raise store_cap.refuse(state, "responses", num_bytes)
                req = dataclasses.replace(req, store=False)  # the response says so from its first event
                self.shell = ResponseShell(req, self.shell.id, self.shell.created_at)
                store_cap.unstored(state, "responses", self.shell.id, num_bytes)
        self.req = req
        self.messages = conversation(req, previous.messages if previous is not None else [])

    def ran_with(self, max_tokens: Any) -> None:
        """The budget the answer runs with (the chat request's max_tokens clamped to what the context leaves,
        output_budget.py): a max_output_tokens past it is echoed as that budget. 10**30 was echoed as sent, 31
        digits that int64 clients cannot read, for an answer that could never run so long."""
        asked = self.req.max_output_tokens
        if asked is not None and isinstance(max_tokens, int) and 0 < max_tokens < asked:
            self.req = dataclasses.replace(self.req, max_output_tokens=max_tokens)
            self.shell = ResponseShell(self.req, self.shell.id, self.shell.created_at)

    async def keep(self, response: dict[str, Any]) -> None:
        """Store `response` (with `store`), a failed one too, as OpenAI keeps it: `GET /v1/responses/{id}` of a
        stream that ended in `response.failed` says failed and why (it was a 404, as if never made). One the
        store finds over its row cap is not, and says `store: false` (the final stream event holds this object);
        a background one's queued row goes then (it cannot say in_progress for ever)."""
        if not self.req.store:
            return
        # Its own input only: the earlier turns' are the previous responses' (store.py walks the chain).
        try:
            await in_store(self.state, ResponseStore.put, response, input_item_objects(self.req.input),
                           self.previous)
        except RowTooLarge as exc:
            if self.req.background and response["status"] == "queued":  # the input alone (__init__ let it by)
                raise store_cap.refuse(self.state, "responses", exc.num_bytes) from exc
            store_cap.unstored(self.state, "responses", response["id"], exc)
            response["store"] = False
            if self.req.background:
                await in_store(self.state, ResponseStore.delete, response["id"])

    async def kept(self, response: dict[str, Any]) -> dict[str, Any]:
        """A whole answer's `response`, stored (keep_end: tried twice). One the store could not keep is answered
        failed (server_error, "the response could not be stored"), its output kept, and that stored if it can be,
        as a streamed answer (`answer`) and a background run end: the client gets what the engine made, and the
        status says that its id will not continue a conversation. It was an HTTP error, the answer lost."""
        if await keep_end(self.keep, response):
            return response
        store_cap.write_failed(self.state, response["id"])
        if response["status"] == "failed":
            return response
        failed = {**response, "status": "failed", "completed_at": None, "incomplete_details": None,
                  "error": {"code": "server_error", "message": UNSTORED_MESSAGE}}
        await keep_end(self.keep, failed)
        return failed

    async def answer(self, stream: ResponseEventStream, chunks: AsyncIterator[dict[str, Any]],
                     on_final: Callable[[], None] = lambda: None) -> AsyncIterator[dict[str, Any]]:
        """The stream events of the chat answer in `chunks`; the final response is kept before the final events go
        out. `on_final`: called once the answer is over, before it is kept. One the store could not keep (tried
        twice, keep_end) ends failed instead, as stored if that can be (responses_background.py)."""
        for event in stream.start():
            yield event
        try:
            async for chunk in chunks:
                if "error" in chunk:
                    raise _chunk_error(chunk)
                for event in stream.chunk(chunk):
                    yield event
            events = stream.finish()
        except Exception as exc:  # noqa: BLE001 (the 200 went out: any failure goes in-band, as OpenAI does)
            err = to_api_error(exc)
            events = stream.fail(err.message, err.code or err.type, err.param)
        finally:  # also when the client left: the source (engine or upstream stream) stops now
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()
        on_final()
        if not await keep_end(self.keep, stream.response):
            store_cap.write_failed(self.state, stream.response["id"])
            if stream.response["status"] != "failed":
                events = stream.fail_instead(events, UNSTORED_MESSAGE, "server_error")
                await keep_end(self.keep, stream.response)
        for event in events:
            yield event

    async def events(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
        async for event in self.answer(ResponseEventStream(self.shell), chunks):
            yield sse_frame(event)


def _chunk_error(chunk: dict[str, Any]) -> APIError:
    """The error event that ended a chat stream mid-answer (an upstream's, or the proxy's for a broken one), with
    its code: an upstream VeloLLM's engine_dead ends the Response as its own Responses API would end it."""
    return APIError(502, error_message(chunk), code=error_code(chunk))


@endpoint("/v1/responses")
async def create_response(request: Request, state: AppState, call: Call) -> Response:
    body = await read_json(request)
    cached = take_hit(request.scope)
    if cached is not None and not body.get("background"):  # a background one is run (bypassed by the policy)
        return await _from_cache(state, call, body, cached)
    target: Any = await route(request, state, call, model_of(body), body=body)
    previous = body.get("previous_response_id")
    stored = await in_store(state, ResponseStore.history, previous) if isinstance(previous, str) else None
    holder = upstream_holding(state, previous) if stored is None else None
    if holder is not None and not isinstance(target, UpstreamTarget):  # the chain goes on there, whatever the model
        target = UpstreamTarget(state.models.upstream, model_of(body))  # type: ignore[arg-type]
    if isinstance(target, UpstreamTarget) and stored is None and (holder is not None or await asks_own_api(target)):
        answer = await forward_or_local(request, state, call, target, body)  # an upstream's own Responses API
        if isinstance(answer, ServedModel):
            target = NativeTarget(answer)  # the router chose this process's replica
        elif holder is not None and answer.status_code == 404:  # it has a Responses API: the model is what it lacks
            raise APIError(404, f"The model '{model_of(body)}' does not exist on {holder}, which stores the previous "
                                f"response '{previous}': its conversation goes on only there; continue it with a "
                                "model that server has.", param="model", code="model_not_found")
        elif holder is not None or answer.status_code not in NO_RESPONSES_API:
            return answer
        else:
            target = chat_target(target, answer)  # the replica that has no Responses API runs the chat
    req = await parsed_continuation(state, body, stored, "continue it")
    turn = _Turn(state, req, stored, store_asked=body.get("store") is True)
    # a background answer always streams underneath: GET shows it as it goes, a cancel stops it at once
    chat = chat_body(turn.req, turn.messages, stream=True if req.background else None)
    if isinstance(target, UpstreamTarget):
        return await _via_upstream_chat(request, state, call, target, turn, chat)
    return await _native(request, state, call, target.model, turn, chat)


async def parsed_continuation(state: AppState, body: dict[str, Any], stored: History | None,
                              then: str) -> ResponsesRequest:
    """The body read as a Responses request whose previous_response_id, if any, is `stored` (found in this
    process's store) and has ended: a chain goes on from a finished answer only (`then`: what the 400 says to do
    once it has, "continue it")."""
    req = await parse_off_loop(parse_responses_request, await resolve_references(state, body))
    if req.previous_response_id and stored is None:
        raise not_found(req.previous_response_id, "previous_response_id")
    running = state.background.get(req.previous_response_id) if req.previous_response_id else None
    if running is not None and not running.done:
        raise APIError(400, f"Previous response with id '{req.previous_response_id}' is still in progress: {then} "
                            "once it has ended.", param="previous_response_id")
    return req


async def resolve_references(state: AppState, body: dict[str, Any]) -> dict[str, Any]:
    """The body with each `item_reference` input item replaced by the stored item it names (an input or
    output item of a stored response: what stateful clients send instead of replaying an item)."""
    items = body.get("input")
    if not isinstance(items, list) or not any(isinstance(i, dict) and i.get("type") == "item_reference"
                                              for i in items):
        return body
    resolved = []
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("type") == "item_reference":
            ref = item.get("id")
            found = await in_store(state, ResponseStore.item, ref) if isinstance(ref, str) else None
            if found is None:
                raise APIError(400, f"Item with id {ref!r} not found.", param=f"input[{i}].id")
            item = found
        resolved.append(item)
    return {**body, "input": resolved}


async def _from_cache(state: AppState, call: Call, body: dict[str, Any], cached: dict[str, Any]) -> Response:
    """A response-cache hit (a stateless request): a new response made of the cached one's output,
    streamed or whole, and stored like a live one."""
    call.model = model_of(body)
    turn = _Turn(state, parse_responses_request(body))
    turn.ran_with(cached.get("max_output_tokens"))  # the live answer's clamp (the same request, the same prompt)

    async def chunks() -> AsyncIterator[dict[str, Any]]:
        for chunk in replay_chunks(cached):
            yield chunk

    if turn.req.stream:
        return streaming_response(turn.events(chunks()), SSE_MEDIA_TYPE)
    stream = ResponseEventStream(turn.shell)
    stream.start()
    for chunk in replay_chunks(cached):
        stream.chunk(chunk)
    stream.finish()
    return JSONResponse(await turn.kept(stream.response))


# Chat field names -> the Responses request's, first match wins (chat_body made the one from the other).
_FIELD_NAMES = (("response_format.json_schema.", "text.format."), ("response_format", "text.format"),
                ("reasoning_effort", "reasoning.effort"), ("max_completion_tokens", "max_output_tokens"),
                (".function.", "."))


def in_responses_terms(exc: InvalidRequest) -> InvalidRequest:
    """A 400 from the chat request underneath, naming the Responses request's fields: `messages` are
    its `input` (after its instructions and the previous responses' conversation), `response_format`
    its `text.format`, and so on. ContextOverflow stays one (context_length_exceeded)."""
    param, message = exc.param or "", str(exc)
    if param.startswith("messages"):
        message = re.sub(r"\bmessages\b", "input", message).replace("these input", "this input")
        return type(exc)(message, param="input")
    for chat, ours in _FIELD_NAMES:
        if chat in param or (chat in message and param.startswith(("tools", "response_format"))):
            return type(exc)(message.replace(chat, ours), param=param.replace(chat, ours))
    return exc


def truncated(req: ResponsesRequest, chat: dict[str, Any]) -> dict[str, Any]:
    """The chat body of a native answer: with `truncation: auto`, OpenAI's, the conversation's first items go when
    it overflows the context (a client's own context_overflow extra first)."""
    return {"context_overflow": "truncate", **chat} if req.truncation == "auto" else chat


async def _native(request: Request, state: AppState, call: Call, served: Any, turn: _Turn,
                  chat: dict[str, Any]) -> Response:
    try:
        native = await prepare_chat(state, served, await parse_off_loop(parse_chat_request, truncated(turn.req, chat)))
        await cancel_on_disconnect(request.receive, native.gen.start())  # grammars compile here
    except InvalidRequest as exc:
        raise in_responses_terms(exc) from exc
    turn.ran_with(native.max_tokens)
    gen = native.gen
    if turn.req.background:
        return await run_in_background(state, turn, stream_chunks(gen, native.fmt, native.tools), gen.aclose)
    call.records_itself = True
    if turn.req.stream:
        async def events() -> AsyncIterator[bytes]:
            status = STATUS_CLIENT_CLOSED
            try:
                async for frame in turn.events(stream_chunks(gen, native.fmt, native.tools)):
                    yield frame
                status = 200
            finally:
                await gen.aclose()
                state.metrics.observe_request(call.model, call.endpoint, status, call.elapsed())
        return streaming_response(events(), SSE_MEDIA_TYPE)
    try:
        completion = await whole_body(request.receive, gen, native.fmt, native.tools)
    except BaseException:
        call.records_itself = False
        raise
    finally:
        await gen.aclose()
    state.metrics.observe_request(call.model, call.endpoint, 200, call.elapsed())
    return JSONResponse(await turn.kept(turn.shell.from_chat_completion(completion)))


async def _via_upstream_chat(request: Request, state: AppState, call: Call, target: UpstreamTarget, turn: _Turn,
                             chat: dict[str, Any]) -> Response:
    sent = chat
    if "max_completion_tokens" in chat:
        # also as max_tokens, which every chat server reads: llama-cpp-python's ignores max_completion_tokens (the
        # answer ran to the context's end), and OpenAI's own, which refuses max_tokens for its reasoning models,
        # has a Responses API and never gets here
        sent = {**chat, "max_tokens": chat["max_completion_tokens"]}
    # A model the router balances between this process and remote replicas: one pick for the create, here (this
    # process's engine runs it natively, a remote replica gets the chat), not one for /v1/responses and another one
    # for the chat after a remote replica's 404.
    answer = await forward_or_local(request, state, call, target, sent, path="/v1/chat/completions")
    if not isinstance(answer, ServedModel):
        return await _as_response(turn, answer)
    refused = call.local_fallback  # the engine refused it before its first byte: another replica's chat answers
    if refused is not None:
        async def elsewhere(exc: BaseException) -> Response:
            return await _as_response(turn, await refused(exc))

        call.local_fallback = elsewhere
    return await _native(request, state, call, answer, turn, chat)


async def _as_response(turn: _Turn, answer: Response) -> Response:
    """An upstream's chat answer as the Response (whole, or its event stream), stored; an error answer as it is."""
    if answer.status_code != 200:
        return answer  # already an OpenAI error body
    if turn.req.background:
        return await run_in_background(turn.state, turn, sse_chunks(answer))
    if turn.req.stream:
        return streaming_response(turn.events(sse_chunks(answer)), SSE_MEDIA_TYPE)
    # A whole answer over the proxy's check size (proxy/forward.VALIDATED_BYTES, 1 MiB: a long one with
    # top_logprobs) comes relayed as it arrives, a StreamingResponse: it was a 500 here (no `.body`).
    body = b"".join([part async for part in answer_bytes(answer)])
    return JSONResponse(await turn.kept(turn.shell.from_chat_completion(json.loads(body))))


def routes() -> list[Route]:
    return [Route("/v1/responses", create_response, methods=["POST"])]
