"""The Responses API's side of an upstream: whether a create goes to the upstream's own Responses API, who
holds a response stored there (its id lookups are relayed to it), and the answers of its chat route read back
(a create run on the chat route of an upstream without a Responses API: api/responses.py).

What an upstream answers here is optional in the Upstream protocol (read with getattr; api/targets.py):
`speaks_responses`, `response_holder`, `relay_stored` (velollm/proxy/gateway.py, velollm/router/router.py).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from velollm.api.handler import AppState
from velollm.api.targets import UpstreamTarget
from velollm.wire.framing import sse_data

NO_RESPONSES_API = (404, 405, 501)  # what an upstream without /v1/responses answers


async def asks_own_api(target: UpstreamTarget) -> bool:
    """Whether the create is asked of the upstream's own Responses API first, known without asking it (a router's
    replicas, each of them): one without (an Ollama, a VeloLLM found by the kind probe) goes straight to the chat
    route, so a router picks its backend once. One that turns out to have none (404, 405, 501: llama.cpp's server)
    is still tried. A native replica the router balances the model with is one of the picks either way: it runs the
    create natively (handler.forward_or_local)."""
    speaks = getattr(target.upstream, "speaks_responses", None)
    return speaks is None or await speaks(target.model)


def chat_target(target: UpstreamTarget, answer: Response) -> UpstreamTarget:
    """Where the chat of a create goes after the upstream's /v1/responses said it has none: under a router, to the
    replica that said so (`answered_by`), so that the create stays on the one pick the policy made for it (and not
    this process's engine, which the router passed over for it)."""
    answered_by = getattr(target.upstream, "answered_by", None)
    replica = answered_by(answer) if answered_by is not None else None
    return dataclasses.replace(target, local=None, replica=replica) if replica is not None else target


def upstream_holding(state: AppState, response_id: Any) -> str | None:
    """Which upstream's own Responses API stored `response_id` (a create passed through to it), said for a message;
    None for an id none did."""
    holder = getattr(state.models.upstream, "response_holder", None)
    return holder(response_id) if holder is not None else None


async def relayed_lookup(request: Request, state: AppState, response_id: str) -> Response | None:
    """A lookup (GET, input_items, DELETE) of a response this process did not store, answered by the upstream that
    stored it (status and body as it sends them); None for an id no upstream stored through here."""
    relay = getattr(state.models.upstream, "relay_stored", None)
    return await relay(request, response_id) if relay is not None else None


async def answer_bytes(answer: Response) -> AsyncIterator[bytes]:
    """The bytes of an answer of the proxy, held or streamed; a streamed one's upstream is closed at the end
    (what the response would do when sent), also when the reader stops early."""
    if not isinstance(answer, StreamingResponse):
        yield bytes(answer.body)
        return
    try:
        async for data in answer.body_iterator:
            yield data if isinstance(data, bytes) else str(data).encode()
    finally:
        close = getattr(answer.body_iterator, "aclose", None)
        if close is not None:
            await close()
        if answer.background is not None:
            await answer.background()


async def sse_chunks(answer: Response) -> AsyncIterator[dict[str, Any]]:
    """The chunk objects of a chat completion stream the proxy answered with. Its events may come held, in one
    body (a forced tool call of an Ollama upstream, taken whole: proxy/openai_via_ollama_forward.py; an upstream
    that ignored `stream`: proxy/whole_as_stream.py), so the media type, not the response's class, tells an
    event stream from a whole answer."""
    if not isinstance(answer, StreamingResponse) and not _is_event_stream(answer):
        yield json.loads(bytes(answer.body))  # an upstream that answered whole
        return
    pending = b""
    parts = answer_bytes(answer)
    try:
        async for data in parts:
            pending += data
            *events, pending = pending.replace(b"\r\n", b"\n").split(b"\n\n")
            for event in events:
                payload = sse_data(event)
                if payload and payload != b"[DONE]":
                    yield json.loads(payload)
    finally:
        await parts.aclose()


def _is_event_stream(answer: Response) -> bool:
    return answer.headers.get("content-type", "").split(";")[0].strip() == "text/event-stream"
