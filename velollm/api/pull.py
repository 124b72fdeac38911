"""POST /api/pull. VeloLLM never downloads a model itself:

- a name this process runs itself (pinned, or found on disk: the Ollama store, the HF cache, `demo`), no
  remote backend serving it too, is present: Ollama's answer for an up-to-date model (`success`), no network;
- any other name goes to the upstream, whose NDJSON progress streams back as it comes (`--config`: the
  Ollama-speaking backends that serve the name, else the first one; velollm/router/pull.py);
- after a pull through the upstream, its model list is fetched again (at the end of the progress stream):
  a pull of a newer version of a tag changes the digest the response cache keys the name with
  (velollm/api/model_identity.py);
- without an upstream: what Ollama answers for a pull it cannot do (a 200 stream ending in an `{"error"}`
  line, or 500 `{"error"}` with `stream: false`), saying how to pull through an Ollama.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from velollm.api.handler import AppState, Call, endpoint, read_json
from velollm.errors import InvalidRequest
from velollm.wire.pull_answer import cannot_pull, present, wants_stream

NO_UPSTREAM = ("pull model manifest: VeloLLM does not download models: start `velollm serve` with an Ollama "
               "upstream (--upstream or $OLLAMA_HOST, or an Ollama backend in --config) to pull through it")


@endpoint("/api/pull")
async def pull(request: Request, state: AppState, call: Call) -> Response:
    body = await read_json(request)
    name = body.get("model") or body.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("model is required", param="model")
    call.model = name
    if await state.models.present(name):
        return present(wants_stream(body))
    upstream = state.models.upstream
    if upstream is None:
        return cannot_pull(NO_UPSTREAM, wants_stream(body))
    response = await upstream.forward(request, body)
    relist_after = getattr(upstream, "relist_after", None)  # optional for Upstream implementations
    if relist_after is not None:
        await relist_after(response)
    return response


def routes() -> list[Route]:
    return [Route("/api/pull", pull, methods=["POST"])]
