"""POST /v1/responses/input_tokens (OpenAI's `client.responses.input_tokens.count`): the input tokens a create of the
same request would use, counted without running it.

A native model's count is the prompt a create renders: the same conversion of the input items, instructions, tools
and previous_response_id chain into the chat body (api/responses.py), the same chat template and context fit
(native_chat.chat_prompt); so it equals the create's `usage.input_tokens`. Its errors are the create's too.
A prompt over the context is counted as the create would send it after its overflow handling (truncation auto,
or the server's --context-overflow): the count is what the model sees, as OpenAI's is. It moves no overflow
metric; under summarize (or compress) it needs the summary, which is made once and cached, so the create that
follows reuses it (a count alone pays that generation, as the create would).

An upstream with its own Responses API counts for itself (its answer relayed, as is the answer of the upstream
holding the previous response). One whose creates run on its chat route (a VeloLLM found by the kind probe) is
asked to count what that chat would hold, a chain stored here inlined as its items. One with a chat route only
(Ollama, llama.cpp) renders its chat template where this process does not see it: any count made here would be a
guess (proxy/prompt_tokens.py counts only the prompts an upstream tokenizes itself), so the answer is a 501 that
says the count is not available for that backend.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from velollm.api.handler import AppState, Call, endpoint, forward_or_local, parse_off_loop, read_json, route
from velollm.api.native_chat import chat_prompt
from velollm.api.protocol_openai import model_of, parse_chat_request
from velollm.api.responses import in_responses_terms, parsed_continuation, truncated
from velollm.api.responses_store import in_store
from velollm.api.responses_upstream import NO_RESPONSES_API, asks_own_api, upstream_holding
from velollm.api.served_model import ServedModel
from velollm.api.targets import NativeTarget, UpstreamTarget
from velollm.errors import InvalidRequest
from velollm.responses import (
    History,
    ResponsesRequest,
    ResponseStore,
    chat_body,
    conversation,
)
from velollm.wire.errors import APIError

COUNT_PATH = "/v1/responses/input_tokens"


def not_counted(model: str) -> APIError:
    """The 501 for a model served by an upstream that cannot count: it renders the chat template itself."""
    return APIError(501, f"Counting input tokens is not available for the model '{model}': it is served by an "
                         "upstream that has no input token count, and whose chat template is applied there, so the "
                         "count cannot be known here.", param="model", code="input_tokens_unavailable")


@endpoint(COUNT_PATH)
async def count_input_tokens(request: Request, state: AppState, call: Call) -> Response:
    body = await read_json(request)
    target: Any = await route(request, state, call, model_of(body), body=body)
    previous = body.get("previous_response_id")
    stored = await in_store(state, ResponseStore.history, previous) if isinstance(previous, str) else None
    holder = upstream_holding(state, previous) if stored is None else None
    if holder is not None and not isinstance(target, UpstreamTarget):  # the chain is there, whatever the model
        target = UpstreamTarget(state.models.upstream, model_of(body))  # type: ignore[arg-type]
    asked = False
    if isinstance(target, UpstreamTarget) and stored is None and (holder is not None or await asks_own_api(target)):
        answer = await forward_or_local(request, state, call, target, body, path=COUNT_PATH)
        if isinstance(answer, ServedModel):
            target = NativeTarget(answer)  # the router chose this process's replica
        elif holder is not None or answer.status_code not in NO_RESPONSES_API:
            return answer
        asked = True
    req = await parsed_continuation(state, body, stored, "count its continuation")
    if isinstance(target, UpstreamTarget):
        if asked:
            raise not_counted(req.model)
        answer = await forward_or_local(request, state, call, target, inlined(body, req, stored), path=COUNT_PATH)
        if not isinstance(answer, ServedModel):
            if answer.status_code in NO_RESPONSES_API:
                raise not_counted(req.model)
            return answer
        target = NativeTarget(answer)
    chat = chat_body(req, conversation(req, stored.messages if stored is not None else []))
    try:
        prompt = await chat_prompt(state, target.model, await parse_off_loop(parse_chat_request, truncated(req, chat)),
                                   counting=True)
    except InvalidRequest as exc:
        raise in_responses_terms(exc) from exc
    return JSONResponse({"object": "response.input_tokens", "input_tokens": len(prompt.fitted.token_ids)})


def inlined(body: dict[str, Any], req: ResponsesRequest, stored: History | None) -> dict[str, Any]:
    """The count asked of an upstream whose creates run on its chat route (a VeloLLM found by the kind probe has
    the count route beside it): the conversation a create would send there, a chain stored here given as the input
    items that make it (the upstream has not got the previous response)."""
    sent = {k: v for k, v in body.items() if k != "previous_response_id"}
    if stored is not None:
        sent["input"] = [*stored.items, *req.input]
    return sent


def routes() -> list[Route]:
    return [Route(COUNT_PATH, count_input_tokens, methods=["POST"])]
