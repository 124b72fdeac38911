"""Ollama's model management: POST /api/copy, DELETE /api/delete, POST /api/create, POST /api/push
(HEAD|POST /api/blobs/<digest>: blobs.py).

With an upstream that takes them (an Ollama, another VeloLLM; `--config`: velollm/router/model_admin.py
picks the backends), they go there as sent and its answer comes back (NDJSON progress relayed as it comes).
Without one (none, or an OpenAI-compatible server only), delete and copy act on the Ollama store this
server loads models from (velollm/engine/loader/ollama_store_edit.py), create writes a model there from
one of its models or an uploaded GGUF blob (local_create.py); push always needs an Ollama.

With an upstream, delete and copy fall back to the local store when the upstream has no such model (a
store not shared with it), and a delete the upstream did also removes the model from the local store when
it is there too: what VeloLLM lists under that name is gone either way. An upstream that does not answer
now counts as none (the local store acts, as native models are served first); a name only an
OpenAI-compatible upstream serves is its clear 501.

Before a model's files change, an on-demand model of that name is unloaded (ModelRegistry.forget); after,
names resolve afresh and the listings (read at each request) show the change. A pinned `--model` model
is not deleted or replaced: its engine stays until a restart, so the request is refused, saying so.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from velollm.api.handler import AppState, Call, endpoint, read_json
from velollm.errors import InvalidRequest, ModelNotFound
from velollm.wire.errors import APIError, error_response

T = TypeVar("T")

NO_PUSH = ("push: VeloLLM does not push models to a registry itself: start `velollm serve` with an Ollama "
           "upstream (--upstream or $OLLAMA_HOST, or an Ollama backend in --config) to push through it")
NOT_HANDLED = (404, 501)  # the upstream has no such model / cannot do it: the local store may


def _name(body: dict[str, Any], field: str = "model") -> str:
    value = body.get(field) if field != "model" else body.get("model") or body.get("name")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a string", param=field)
    return value


async def managing_upstream(state: AppState) -> Any:
    """The upstream when it takes Ollama's model management, else None (velollm/proxy/model_admin.py)."""
    upstream = state.models.upstream
    manages = getattr(upstream, "manages", None)
    return upstream if manages is not None and await manages() else None


async def upstream_answer(state: AppState, request: Request, body: dict[str, Any] | None) -> Response | None:
    """The answer of an upstream that takes model management; None without one (none, an OpenAI-compatible
    server, or one not reachable now: the local store then acts, as a native model is served first)."""
    upstream = await managing_upstream(state)
    return await upstream.manage(request, body) if upstream is not None else None


async def unmanaged(state: AppState, request: Request, body: dict[str, Any] | None) -> Response | None:
    """For a name the local store lacks: the 501 of an upstream without model management that serves it
    (an OpenAI-compatible server); None otherwise (the caller's 404)."""
    manage = getattr(state.models.upstream, "manage", None)
    if manage is None:
        return None
    answer = await manage(request, body)
    return answer if answer.status_code == 501 else None


def refuse_pinned(state: AppState, name: str, doing: str) -> None:
    pinned = state.models.pinned(name)
    if pinned is not None:
        raise APIError(400, f"cannot {doing} model '{name}': this server runs it with --model ({pinned.name}) and "
                            "keeps it loaded; restart `velollm serve` without it first")


async def store_op(state: AppState, fn: Callable[..., T], *args: Any) -> T:
    """A change to the store, in a worker thread, one at a time (ModelRegistry.store_lock); a file-system
    failure (a store this server may read but not write, a full disk) as a 500 that says which store and
    why, not an internal error."""
    def locked() -> T:
        with state.models.store_lock:
            return fn(*args)

    try:
        return await asyncio.to_thread(locked)
    except OSError as exc:
        where = exc.filename or ""
        raise APIError(500, f"the Ollama store cannot be changed: {exc.strerror or exc}"
                            + (f": {where}" if where else "")) from None


def empty_ok() -> Response:
    return Response(status_code=200)  # Ollama's copy and delete answer 200 with an empty body


@endpoint("/api/delete")
async def delete(request: Request, state: AppState, call: Call) -> Response:
    body = await read_json(request)
    name = call.model = _name(body)
    refuse_pinned(state, name, "delete")
    await state.models.forget(name)
    answer = await upstream_answer(state, request, body)
    if answer is not None and answer.status_code not in NOT_HANDLED:
        if answer.status_code == 200:
            await _delete_locally(state, name, missing_ok=True)  # a local store not shared with the upstream
        return answer
    try:
        await _delete_locally(state, name, missing_ok=False)
    except ModelNotFound:
        answer = answer or await unmanaged(state, request, body)
        if answer is not None:
            return answer
        raise
    return empty_ok()


async def _delete_locally(state: AppState, name: str, missing_ok: bool) -> None:
    root = state.models.store_root()
    try:
        if root is None:
            raise ModelNotFound(f"model '{name}' not found")
        from velollm.engine.loader import ollama_store_edit as store_edit  # (no engine import under --proxy-only)

        await store_op(state, store_edit.delete_model, name, root)
    except (ModelNotFound, InvalidRequest):
        if not missing_ok:
            raise
    finally:
        state.models.store_changed()


@endpoint("/api/copy")
async def copy(request: Request, state: AppState, call: Call) -> Response:
    body = await read_json(request)
    source, destination = _name(body, "source"), _name(body, "destination")
    call.model = source
    refuse_pinned(state, destination, "replace")
    await state.models.forget(destination)
    answer = await upstream_answer(state, request, body)
    if answer is not None and answer.status_code not in NOT_HANDLED:
        state.models.store_changed()  # the upstream's store may be this server's too
        return answer
    root = state.models.store_root()
    try:
        if root is None:
            raise ModelNotFound(f"model {json.dumps(source)} not found")
        from velollm.engine.loader import ollama_store_edit as store_edit

        await store_op(state, store_edit.copy_model, source, destination, root)
    except ModelNotFound:
        answer = answer or await unmanaged(state, request, body)
        if answer is not None:
            return answer
        pinned = state.models.pinned(source)
        if pinned is not None:  # listed by /api/tags, but not a model of the store (demo, a path, a folder)
            raise ModelNotFound(f"model {json.dumps(source)} not found in the Ollama store: this server runs it "
                                f"with --model ({pinned.name}), and /api/copy copies the store's models") from None
        raise
    finally:
        state.models.store_changed()
    return empty_ok()


@endpoint("/api/create")
async def create(request: Request, state: AppState, call: Call) -> Response:
    body = await read_json(request)
    name = call.model = _name(body)
    refuse_pinned(state, name, "replace")
    await state.models.forget(name)
    answer = await upstream_answer(state, request, body)
    if answer is not None:
        state.models.store_changed()
        return answer
    root = state.models.store_root()
    if root is None:
        return error_response("ollama", APIError(501, _no_upstream("create", "keeps no Ollama store of its own "
                                                                   "under --proxy-only")))
    from velollm.api.local_create import create_locally

    return await create_locally(state, request, body, root)


@endpoint("/api/push")
async def push(request: Request, state: AppState, call: Call) -> Response:
    body = await read_json(request)
    call.model = _name(body)
    answer = await upstream_answer(state, request, body)
    return answer if answer is not None else error_response("ollama", APIError(501, NO_PUSH))


def _no_upstream(what: str, why: str) -> str:
    return (f"{what}: this server has no Ollama upstream to {what} through (--upstream or $OLLAMA_HOST, or an "
            f"Ollama backend in --config), and VeloLLM {why}")


def routes() -> list[Route]:
    return [Route("/api/delete", delete, methods=["DELETE"]), Route("/api/copy", copy, methods=["POST"]),
            Route("/api/create", create, methods=["POST"]), Route("/api/push", push, methods=["POST"])]
