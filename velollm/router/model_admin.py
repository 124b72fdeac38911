"""Ollama's model management through the router: which Ollama-speaking backends (Ollama, VeloLLM) a
request goes to, by what it acts on. OpenAI-compatible backends (llama.cpp, vLLM) have none.

- /api/delete: every admitted Ollama backend whose listing has the model, one after the other (replicas
  stay alike; the first failure is the answer, after all were asked). None has it: 404, or 501 when only
  an OpenAI-compatible backend serves it.
- /api/copy: the same, by the source's name: each replica gets the new name.
- /api/push: the first admitted Ollama backend that has the model.
- /api/blobs/<digest> (HEAD, POST) and /api/create: the *blob backend*, the first admitted Ollama backend
  in the file's order, so that an upload and the create that uses it meet on the same server (while
  that backend stays up); except a create from an existing model (`from`, no `files` or `adapters`),
  which goes to the first admitted Ollama backend that has that model.

Listings are fetched again after a change, so /api/tags, /v1/models and routing see it at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from velollm.proxy import model_admin
from velollm.proxy.upstream import UpstreamUnavailable
from velollm.proxy.upstream_answer import error_answer

if TYPE_CHECKING:
    from velollm.router.backend import Backend

logger = logging.getLogger(__name__)

FANNED_OUT = ("/api/delete", "/api/copy")


async def speaks_ollama(b: Backend) -> bool:
    if not b.admitted:
        return False
    try:
        kind = b.upstream.known_kind or await b.upstream.kind()
    except UpstreamUnavailable:
        return False
    return kind == "ollama" or b.upstream.speaks_both


async def ollama_backends(backends: Sequence[Backend]) -> list[Backend]:
    """The admitted backends that take Ollama's model management, in the file's order."""
    return [b for b in backends if await speaks_ollama(b)]


async def targets(backends: Sequence[Backend], path: str, body: dict[str, Any] | None) -> list[Backend] | Response:
    """The backends a management request goes to, or the answer when there is none."""
    ollama = await ollama_backends(backends)
    name = model_admin.named(path, body)
    if name is not None:
        having = [b for b in ollama if b.serves(name)]
        if having:
            return having if path in FANNED_OUT else having[:1]
        if any(b.serves(name) for b in backends):
            others = next(b for b in backends if b.serves(name))
            return model_admin.not_managed(others.url, path)
        if path == "/api/copy":
            return error_answer("ollama", 404, f"model \"{name}\" not found")
        return error_answer("ollama", 404, f"model '{name}' not found")
    if path == "/api/create" and body is not None and isinstance(body.get("from"), str) \
            and not body.get("files") and not body.get("adapters"):
        having = [b for b in ollama if b.serves(body["from"])]
        if having:
            return having[:1]
    if ollama:
        return ollama[:1]
    return model_admin.not_managed(", ".join(b.url for b in backends) or "(none)", path,
                                   "OpenAI-compatible (or unreachable)")


async def manage(backends: Sequence[Backend], request: Request, body: dict[str, Any] | None,
                 refresh: Callable[[], Awaitable[Any]]) -> Response:
    path = request.url.path
    chosen = await targets(backends, path, body)
    if isinstance(chosen, Response):
        return chosen
    answer: Response | None = None
    for b in chosen:
        response = await model_admin.relay(request, b.upstream, body)
        b.answered(response.status_code)
        if answer is None or (response.status_code >= 400 > answer.status_code):
            answer = response  # the first failure wins; else the last success
        if response.status_code >= 400:
            logger.warning("%s %s on backend %s answered %d", request.method, path, b.name, response.status_code)
    assert answer is not None
    answer.headers["x-velollm-backend"] = ",".join(b.name for b in chosen)
    if path in model_admin.CHANGES_LISTING and answer.status_code < 400:
        await model_admin.after(answer, refresh)
    return answer
