"""POST /v1/responses/input_tokens (OpenAI's `client.responses.input_tokens.count`): the input tokens a create of the
same request would use, counted without running it.

A native model's count is the prompt a create renders: the same conversion of the input items, instructions, tools
and previous_response_id chain into the chat body (api/responses.py), the same chat template and context fit
(native_chat.chat_prompt); so it equals the create's `usage.input_tokens`. Its errors are the create's too.
A prompt over the context is counted as the create would send it after its overflow handling (truncation auto,
or the server's --context-overflow): the count is what the model sees, as OpenAI's is. It moves no overflow
metric; under summarize (or compress) it needs the summary, which is made once and cached, so the create that
follows reuses it (a count alone pays that generation, as the create would).

Routed as api/responses_side_route.py says: an upstream with its own Responses API counts for itself; one with a
chat route only (Ollama, llama.cpp) renders its chat template where this process does not see it: any count made
here would be a guess (proxy/prompt_tokens.py counts only the prompts an upstream tokenizes itself), so the answer
is a 501 that says the count is not available for that backend.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from velollm.api.handler import AppState, Call, endpoint, parse_off_loop
from velollm.api.native_chat import chat_prompt
from velollm.api.protocol_openai import parse_chat_request
from velollm.api.responses import in_responses_terms, truncated
from velollm.api.responses_side_route import Here, side_route
from velollm.errors import InvalidRequest
from velollm.responses import chat_body, conversation
from velollm.wire.errors import APIError

COUNT_PATH = "/v1/responses/input_tokens"


def not_counted(model: str) -> APIError:
    """The 501 for a model served by an upstream that cannot count: it renders the chat template itself."""
    return APIError(501, f"Counting input tokens is not available for the model '{model}': it is served by an "
                         "upstream that has no input token count, and whose chat template is applied there, so the "
                         "count cannot be known here.", param="model", code="input_tokens_unavailable")


@endpoint(COUNT_PATH)
async def count_input_tokens(request: Request, state: AppState, call: Call) -> Response:
    here = await side_route(request, state, call, COUNT_PATH, "count its continuation", not_counted)
    if not isinstance(here, Here):
        return here
    req = here.req
    chat = chat_body(req, conversation(req, here.stored.messages if here.stored is not None else []))
    try:
        prompt = await chat_prompt(state, here.served, await parse_off_loop(parse_chat_request, truncated(req, chat)),
                                   counting=True)
    except InvalidRequest as exc:
        raise in_responses_terms(exc) from exc
    return JSONResponse({"object": "response.input_tokens", "input_tokens": len(prompt.fitted.token_ids)})


def routes() -> list[Route]:
    return [Route(COUNT_PATH, count_input_tokens, methods=["POST"])]
