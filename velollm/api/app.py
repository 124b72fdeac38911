"""The Starlette app factory. Its lifespan loads (or adopts) the engines, starts and stops them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from velollm.api import (
    blobs,
    embeddings,
    model_admin,
    ollama,
    ollama_models,
    openai,
    pull,
    responses,
    responses_compact,
    responses_count,
    responses_lookup,
    responses_store,
    status_page,
    stored_chat,
)
from velollm.api.cors import PreflightCORSMiddleware
from velollm.api.drain import Drain, DrainMiddleware
from velollm.api.handler import AppState
from velollm.api.lease import LeaseScope
from velollm.api.metrics import ServerMetrics, StatsLogger
from velollm.api.middleware import (
    CORS_EXPOSE_HEADERS,
    CORS_HEADERS,
    APIKeyMiddleware,
    BodyLimitMiddleware,
    HostCheckMiddleware,
    OriginCheckMiddleware,
)
from velollm.api.on_demand import OnDemand
from velollm.api.origins import OriginPolicy
from velollm.api.registry import ModelRegistry
from velollm.api.response_cache import open_cache
from velollm.api.server_config import ServerConfig
from velollm.api.targets import Upstream
from velollm.errors import ModelNotFound, UnsupportedModel
from velollm.wire.errors import APIError, api_of, error_response

logger = logging.getLogger(__name__)


def on_demand(config: ServerConfig) -> OnDemand:
    """Loading of models not given with --model: resolved by name (cheap), loaded when requested."""
    from velollm.api.native_models import describe_native, load_native, native_identity, prefetch_room, resolve_native

    allow_paths = config.client_paths_allowed

    def resolve(name: str) -> str:
        return resolve_native(name, allow_paths)  # lazy source: reads headers, not weights

    def load(name: str) -> Any:
        return load_native(name, config.engine, served_name=name, allow_paths=allow_paths)

    return OnDemand(resolve=resolve, load=load, max_loaded_models=config.max_loaded_models,
                    keep_alive_s=config.keep_alive_s, describe=lambda name: describe_native(name, allow_paths),
                    host_cache_bytes=config.host_cache_bytes, prefetch=config.model_prefetch,
                    prefetch_room=lambda name: prefetch_room(name, config.engine, allow_paths),
                    identify=lambda name: native_identity(name, allow_paths))


async def health(request: Request) -> Response:
    state: AppState = request.app.state.velollm
    models = state.models
    if state.drain.draining:
        return JSONResponse({"status": "draining", "running": state.drain.num_running}, status_code=503)
    if models.load_error is not None:
        return JSONResponse({"status": "error", "error": models.load_error}, status_code=503)
    if not models.ready:
        return JSONResponse({"status": "loading"}, status_code=503)
    loaded = models.models()
    # An engine whose thread died never comes back (its requests get 503 engine_dead; a router sends them to
    # remote replicas meanwhile): unhealthy, so that a supervisor restarts the process.
    dead = {m.name: why for m in loaded if isinstance(why := getattr(m.engine, "dead", None), str)}
    if dead:
        error = "; ".join(f"the engine of {name!r} died ({why})" for name, why in dead.items())
        return JSONResponse({"status": "error", "error": error, "dead": list(dead),
                             "models": [m.name for m in loaded]}, status_code=503)
    return JSONResponse({"status": "ok", "models": [m.name for m in loaded]})


async def metrics(request: Request) -> Response:
    body, content_type = request.app.state.velollm.metrics.render()
    return Response(body, media_type=content_type)


async def _http_error(request: Request, exc: HTTPException) -> Response:  # type: ignore[override]
    """An unknown route or method, in the wire format of its path: on /v1 OpenAI's error object with
    OpenAI's message (`Invalid URL (GET /v1/x)`), elsewhere Ollama's `{"error": "404 page not found"}`."""
    api = api_of(request.url.path)
    message = "404 page not found" if exc.status_code == 404 else (exc.detail or "error")
    if exc.status_code == 404 and api == "openai":
        message = f"Invalid URL ({request.method} {request.url.path})"
    if exc.status_code == 405:
        message = f"method {request.method} not allowed on {request.url.path}"
    return error_response(api, APIError(exc.status_code, message, headers=dict(exc.headers or {})))


class _ByMethod:
    """The ASGI apps of the routes that share a path, by method (HEAD with GET, as Starlette adds it)."""

    def __init__(self, apps: Mapping[str, Any]) -> None:
        self.apps = dict(apps)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.apps[scope["method"]](scope, receive, send)


def one_route_per_path(routes: list[Route]) -> list[Route]:
    """The routes that share a path (GET, POST and DELETE /v1/chat/completions/{id} ...) made one, answering
    each method with its own route. Starlette answers a method no route takes with the first matching path's
    405, whose Allow header would list that route's methods only (PUT /v1/chat/completions/{id}: `GET, HEAD`,
    though POST and DELETE are there too): one route per path lists them all."""
    by_path: dict[str, list[Route]] = {}
    for route in routes:
        by_path.setdefault(route.path, []).append(route)
    merged = []
    for path, same in by_path.items():
        if len(same) == 1:
            merged.append(same[0])
            continue
        apps = {method: route.app for route in same for method in route.methods or ()}
        merged.append(Route(path, _ByMethod(apps), methods=sorted(apps), name=same[0].name))
    return merged


def _middleware(config: ServerConfig, drain: Drain, cache: Middleware | None) -> list[Middleware]:
    origins = OriginPolicy(config.cors_origins)
    return [
        Middleware(OriginCheckMiddleware, policy=origins),
        Middleware(PreflightCORSMiddleware, allow_origin_regex=origins.regex, allow_methods=["*"], allow_headers=CORS_HEADERS,
                   expose_headers=CORS_EXPOSE_HEADERS),
        Middleware(HostCheckMiddleware, enabled=config.is_loopback),
        Middleware(APIKeyMiddleware, api_key=config.api_key),
        Middleware(DrainMiddleware, drain=drain),
        Middleware(BodyLimitMiddleware, max_bytes=config.max_request_bytes, idle_s=config.body_timeout_s),
        *([cache] if cache is not None else []),
        Middleware(LeaseScope),
    ]


async def _load(config: ServerConfig, models: ModelRegistry,
                on_load_error: Callable[[BaseException], None] | None, on_ready: Callable[[], None] | None) -> None:
    try:
        await models.load(config.models, config.served_names, config.engine)
    except Exception as exc:  # reported on /health; the CLI stops the server
        if isinstance(exc, (ModelNotFound, UnsupportedModel)):  # the model named, not the code: its message says all
            logger.error("loading models failed: %s", exc)
        else:
            logger.exception("loading models failed")
        models.load_error = f"{type(exc).__name__}: {exc}"
        if on_load_error is not None:
            on_load_error(exc)
    finally:
        if on_ready is not None:
            on_ready()
        models.mark_ready()


async def _prune(models: ModelRegistry) -> None:
    """Ollama's start-up prune of the store's unused blobs (ollama_store_edit.prune_blobs: an hour old or more,
    since the store may be shared with a running Ollama), what was removed logged."""
    root = models.store_root()
    if root is None or not root.is_dir():
        return
    from velollm.engine.loader.ollama_store_edit import PRUNE_AGE_S, prune_blobs

    def prune() -> list[Path]:
        with models.store_lock:
            return prune_blobs(root)

    try:
        removed = await asyncio.to_thread(prune)
    except OSError as exc:  # a store this server may read but not write: served as it is
        logger.warning("pruning unused blobs in %s failed: %s", root, exc)
        return
    for path in removed:
        logger.info("pruned unused blob %s (no manifest names it, untouched for %d minutes or more)", path,
                    PRUNE_AGE_S // 60)
    if removed:
        logger.info("pruned %d unused blob%s from %s (OLLAMA_NOPRUNE=1 keeps them)", len(removed),
                    "" if len(removed) == 1 else "s", root)


def _router(config: ServerConfig, cache: Any) -> Any:
    """The ComplexityRouter of [routing]; its kNN shares the semantic cache's embedder when both name
    the same embedding model (one copy of the weights, one lock)."""
    from velollm.complexity import ComplexityRouter
    from velollm.complexity.knn import load_index

    assert config.routing is not None
    semantic = getattr(cache.cache, "semantic", None) if cache is not None else None
    knn = config.routing.knn
    if semantic is not None and knn is not None and knn.embedding_model == config.cache.embedding_model:
        return ComplexityRouter(config.routing, lambda settings: load_index(settings, semantic.embedder))
    return ComplexityRouter(config.routing)


def _identifier(state: AppState) -> Callable[[str], Awaitable[str]]:
    """What the response cache keys a model name with (velollm/api/model_identity.py); the virtual model
    (routing by complexity) stands for every model it routes to."""

    async def identify(name: str) -> str:
        router = state.router
        if router is not None and router.handles(name):
            return "routed:" + ",".join([await state.models.identity(m) for m in router.policy.models])
        return await state.models.identity(name)

    return identify


def create_app(config: ServerConfig, engines: Mapping[str, Any] | None = None, *,
               upstream: Upstream | None = None,
               on_load_error: Callable[[BaseException], None] | None = None,
               on_ready: Callable[[], None] | None = None) -> Starlette:
    """Builds the app. With `engines` (served name -> engine), those are served as given and nothing
    else is loaded; otherwise the lifespan loads `config.models` in the background (/health is 503
    until they are ready) and other runnable names load on demand. `config.proxy_only`: no engine.
    The app owns `upstream` from here on (closed at shutdown). `on_ready` runs once the start-up models are
    loaded (or failed), before /health says so: the CLI freezes the start-up heap there (startup_heap.py).
    """
    native = engines is None and not config.proxy_only
    models = ModelRegistry(upstream, on_demand(config) if native else None)
    state = AppState(config=config, models=models, metrics=ServerMetrics(models))
    state.metrics.count_background(lambda: state.background.num_live)
    cache = open_cache(config.cache, state.metrics, _identifier(state)) if config.cache is not None else None
    if cache is not None:
        models.forgotten.append(cache.cache.stale.forget)
    if config.routing is not None:
        state.router = _router(config, cache)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = []
        start = getattr(upstream, "start", None)  # velollm.router's Router: health checks, model refresh
        if start is not None:
            await start()
        if state.router is not None:
            state.router.start()  # embeds the kNN examples in a worker thread
        if not native:
            for name, engine in (engines or {}).items():
                models.add(name, engine)
            models.start_all()
            if on_ready is not None:
                on_ready()
            models.mark_ready()
        else:
            if config.prune_blobs:
                await _prune(models)
            tasks.append(asyncio.create_task(_load(config, models, on_load_error, on_ready)))
        await responses_store.open_existing_store(state)  # before the server listens: its conversion waits for nothing
        if config.stats_interval_s > 0:
            tasks.append(asyncio.create_task(StatsLogger(models, state.metrics, config.stats_interval_s).run()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await state.background.stop_all()  # stored as failed while the engines and the store are still up
            await models.close()
            if state.router is not None:
                await state.router.close()
            if cache is not None:
                await cache.close()
            if state.responses is not None:
                state.responses.close()
            close = getattr(upstream, "aclose", None)
            if close is not None:
                await close()

    routes = one_route_per_path([
        Route("/health", health, methods=["GET", "HEAD"]), Route("/metrics", metrics, methods=["GET"]),
        *status_page.routes(), *openai.routes(), *stored_chat.routes(), *responses.routes(),
        *responses_count.routes(), *responses_compact.routes(), *responses_lookup.routes(), *ollama.routes(),
        *ollama_models.routes(), *embeddings.routes(), *pull.routes(), *model_admin.routes(), *blobs.routes()])
    app = Starlette(routes=routes, middleware=_middleware(config, state.drain, cache.middleware if cache else None),
                    lifespan=lifespan,
                    exception_handlers={HTTPException: _http_error})
    app.state.velollm = state
    return app
