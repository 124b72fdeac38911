"""POST /v1/responses/compact (OpenAI's `client.responses.compact`): a conversation made short enough to go on
with. The answer is a `response.compaction`: the conversation's user messages as they were, then one `compaction`
item whose `encrypted_content` carries the served model's summary of the whole conversation (the summarizer of
--context-overflow compress, api/summarizer.py, cached by what it summarises). A create whose input holds those
items reads the summary as a system message where the compaction item stands (velollm/responses/compaction.py,
which says why the content is self-contained: it survives a restart and needs no store).

The conversation is the create's: the input items, and the previous_response_id chain found in the store.
Routed as /v1/responses/input_tokens is (api/responses_side_route.py): an upstream with its own Responses API
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
from velollm.api.handler import AppState, Call, endpoint
from velollm.api.responses_side_route import Here, side_route
from velollm.api.served_model import ServedModel
from velollm.api.summarizer import ModelSummarizer
from velollm.responses import conversation
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
    here = await side_route(request, state, call, COMPACT_PATH, "compact it", not_compacted)
    if not isinstance(here, Here):
        return here
    messages = conversation(here.req, here.stored.messages if here.stored is not None else [])
    if not messages:
        raise APIError(400, "Invalid 'input': there is no conversation to compact.", param="input")
    return JSONResponse(await _compacted(state, here.served, messages))


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
