"""Where a Responses request that is not a create goes (POST /v1/responses/input_tokens, /v1/responses/compact):
the same request asked of the backend that serves its model, or the native model that answers it here.

An upstream with its own Responses API answers for itself (its answer relayed, as is the answer of the upstream
holding the previous response, whatever the model). One whose creates run on its chat route but that has the
route (a VeloLLM found by the kind probe) is asked with a chain stored here inlined as its items (`inlined`). One
with a chat route only (Ollama, llama.cpp) is the route's own 501 (`unavailable`): what it would compute here is
not the upstream model's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from velollm.api.handler import AppState, Call, forward_or_local, read_json, route
from velollm.api.protocol_openai import model_of
from velollm.api.responses import parsed_continuation
from velollm.api.responses_store import in_store
from velollm.api.responses_upstream import NO_RESPONSES_API, asks_own_api, upstream_holding
from velollm.api.served_model import ServedModel
from velollm.api.targets import NativeTarget, UpstreamTarget
from velollm.responses import History, ResponsesRequest, ResponseStore
from velollm.wire.errors import APIError


@dataclass
class Here:
    """A side request this process answers: its native model, the parsed request and the stored chain."""

    served: ServedModel
    req: ResponsesRequest
    stored: History | None


async def side_route(request: Request, state: AppState, call: Call, path: str, then: str,
                     unavailable: Callable[[str], APIError]) -> Response | Here:
    """The upstream's answer to the request at `path`, or what a native model needs to answer it here. `then`:
    what a 400 for a previous response still running says to do once it has ended."""
    body = await read_json(request)
    target: Any = await route(request, state, call, model_of(body), body=body)
    previous = body.get("previous_response_id")
    stored = await in_store(state, ResponseStore.history, previous) if isinstance(previous, str) else None
    holder = upstream_holding(state, previous) if stored is None else None
    if holder is not None and not isinstance(target, UpstreamTarget):  # the chain is there, whatever the model
        target = UpstreamTarget(state.models.upstream, model_of(body))  # type: ignore[arg-type]
    asked = False
    if isinstance(target, UpstreamTarget) and stored is None and (holder is not None or await asks_own_api(target)):
        answer = await forward_or_local(request, state, call, target, body, path=path)
        if isinstance(answer, ServedModel):
            target = NativeTarget(answer)  # the router chose this process's replica
        elif holder is not None or answer.status_code not in NO_RESPONSES_API:
            return answer
        asked = True
    req = await parsed_continuation(state, body, stored, then)
    if isinstance(target, UpstreamTarget):
        if asked:
            raise unavailable(req.model)
        answer = await forward_or_local(request, state, call, target, inlined(body, req, stored), path=path)
        if not isinstance(answer, ServedModel):
            if answer.status_code in NO_RESPONSES_API:
                raise unavailable(req.model)
            return answer
        target = NativeTarget(answer)
    return Here(target.model, req, stored)


def inlined(body: dict[str, Any], req: ResponsesRequest, stored: History | None) -> dict[str, Any]:
    """The request asked of an upstream whose creates run on its chat route (a VeloLLM found by the kind probe has
    the side routes beside it): the conversation a create would send there, a chain stored here given as the input
    items that make it (the upstream has not got the previous response)."""
    sent = {k: v for k, v in body.items() if k != "previous_response_id"}
    if stored is not None:
        sent["input"] = [*stored.items, *req.input]
    return sent
