"""POST /v1/responses/compact (OpenAI's `client.responses.compact`): a conversation made short enough to go on
with. The answer is a `response.compaction`: the conversation's user messages as they were, then one `compaction`
item whose `encrypted_content` carries the served model's summary of the whole conversation (the summarizer of
--context-overflow compress, api/summarizer.py, cached by what it summarises). A create whose input holds those
items reads the summary as a system message where the compaction item stands (velollm/responses/compaction.py,
which says why the content is self-contained: it survives a restart and needs no store).

The conversation is the create's: the input items, and the previous_response_id chain found in the store.
Routing mirrors /v1/responses/input_tokens (api/responses_count.py): an upstream with its own Responses API
compacts for itself (its answer relayed, as is the answer of the upstream holding the previous response); one whose
creates run on its chat route but that has the route (a VeloLLM found by the kind probe) is asked with a chain
stored here inlined as its items; one with a chat route only (Ollama, llama.cpp) is a 501 that says so: a summary
made here would not be the asked model's, and the model's template is applied where this process cannot see it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from velollm.api.context_fit import context_state
from velollm.api.handler import AppState, Call, endpoint, forward_or_local, read_json, route
from velollm.api.protocol_openai import model_of
from velollm.api.responses import parsed_continuation
from velollm.api.responses_count import inlined
from velollm.api.responses_store import in_store
from velollm.api.responses_upstream import NO_RESPONSES_API, asks_own_api, upstream_holding
from velollm.api.served_model import ServedModel
from velollm.api.summarizer import ModelSummarizer
from velollm.api.targets import NativeTarget, UpstreamTarget
from velollm.responses import ResponseStore, conversation
from velollm.responses.compaction import seal
from velollm.responses.items import new_id
from velollm.wire.errors import APIError

COMPACT_PATH = "/v1/responses/compact"
# The summary's length: an eighth of the context, as compress budgets its own, at least 16 and at most 512 tokens.
_MIN_SUMMARY_TOKENS, _MAX_SUMMARY_TOKENS = 16, 512


def not_compacted(model: str) -> APIError:
    """The 501 for a model served by an upstream that has no compaction of its own."""
    return APIError(501, f"Compacting a conversation is not available for the model '{model}': it is served by an "
                         "upstream that has no /v1/responses/compact, and a summary made here would not be that "
                         "model's.", param="model", code="compaction_unavailable")


@endpoint(COMPACT_PATH)
async def compact_response(request: Request, state: AppState, call: Call) -> Response:
    body = await read_json(request)
    target: Any = await route(request, state, call, model_of(body), body=body)
    previous = body.get("previous_response_id")
    stored = await in_store(state, ResponseStore.history, previous) if isinstance(previous, str) else None
    holder = upstream_holding(state, previous) if stored is None else None
    if holder is not None and not isinstance(target, UpstreamTarget):  # the chain is there, whatever the model
        target = UpstreamTarget(state.models.upstream, model_of(body))  # type: ignore[arg-type]
    asked = False
    if isinstance(target, UpstreamTarget) and stored is None and (holder is not None or await asks_own_api(target)):
        answer = await forward_or_local(request, state, call, target, body, path=COMPACT_PATH)
        if isinstance(answer, ServedModel):
            target = NativeTarget(answer)  # the router chose this process's replica
        elif holder is not None or answer.status_code not in NO_RESPONSES_API:
            return answer
        asked = True
    req = await parsed_continuation(state, body, stored, "compact it")
    if isinstance(target, UpstreamTarget):
        if asked:
            raise not_compacted(req.model)
        answer = await forward_or_local(request, state, call, target, inlined(body, req, stored), path=COMPACT_PATH)
        if not isinstance(answer, ServedModel):
            if answer.status_code in NO_RESPONSES_API:
                raise not_compacted(req.model)
            return answer
        target = NativeTarget(answer)
    messages = conversation(req, stored.messages if stored is not None else [])
    if not messages:
        raise APIError(400, "Invalid 'input': there is no conversation to compact.", param="input")
    return JSONResponse(await _compacted(state, target.model, messages))


async def _compacted(state: AppState, served: ServedModel, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The response.compaction object of `messages` on a native model."""
    engine = served.engine
    context_len = engine.max_model_len
    max_tokens = max(_MIN_SUMMARY_TOKENS, min(_MAX_SUMMARY_TOKENS, context_len // 8))
    summarizer = ModelSummarizer(engine, context_state(state).summary_cache(served.name))
    summary = (await summarizer.summarize(messages, context_len, max_tokens)).strip()
    num_input = len(await asyncio.to_thread(engine.tokenizer.encode_chat, messages))
    num_output = len(engine.tokenizer.encode(summary, add_special_tokens=False))
    output = [_user_item(m) for m in messages if m["role"] == "user"]
    output.append({"id": new_id("cmp"), "type": "compaction", "encrypted_content": seal(summary)})
    return {"id": new_id("resp"), "object": "response.compaction", "created_at": int(time.time()),
            "output": output,
            "usage": {"input_tokens": num_input, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": num_output, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": num_input + num_output}}


def _user_item(message: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": new_id("msg"), "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": message.get("content") or ""}]}


def routes() -> list[Route]:
    return [Route(COMPACT_PATH, compact_response, methods=["POST"])]
