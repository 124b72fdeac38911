"""What every route shares: app state, error mapping, request metrics, JSON bodies, context fitting."""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from velollm.api.drain import Drain
from velollm.api.lease import EngineLease
from velollm.api.served_model import ServedModel
from velollm.api.targets import NativeTarget, UpstreamTarget
from velollm.errors import EngineDead, InvalidRequest, ModelNotFound, Overloaded, ServeLocally
from velollm.responses.background import BackgroundRuns
from velollm.wire.disconnect import STATUS_CLIENT_CLOSED, ClientDisconnected
from velollm.wire.errors import APIError, api_of, error_response, to_api_error
from velollm.wire.json_body import parse_json_off_loop, take_handed

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from velollm.api.generation import ChoiceState
    from velollm.api.metrics import ServerMetrics
    from velollm.api.registry import ModelRegistry
    from velollm.api.server_config import ServerConfig
    from velollm.api.targets import Target
    from velollm.complexity import ComplexityRouter, RouteDecision

logger = logging.getLogger(__name__)

# What an embedding model cannot do, by endpoint: `"NAME" does not support chat` (Ollama's 400).
_GENERATES = {"/v1/chat/completions": "chat", "/api/chat": "chat", "/v1/completions": "completions",
              "/api/generate": "generate", "/v1/responses": "responses",
              "/v1/responses/input_tokens": "responses",
              "/v1/responses/compact": "responses"}


@dataclass
class AppState:
    """Everything the handlers need; lives on `app.state.velollm` (no module globals)."""

    config: ServerConfig
    models: ModelRegistry
    metrics: ServerMetrics
    responses: Any = None  # velollm.responses.ResponseStore, opened on first use (api/responses.py)
    context: Any = None  # api/context_fit.ContextState, made on first use
    router: ComplexityRouter | None = None  # the virtual model of [routing] (velollm/complexity)
    drain: Drain = field(default_factory=Drain)  # admission; drained at shutdown (api/shutdown.py)
    background: BackgroundRuns = field(default_factory=BackgroundRuns)  # background responses (responses_background.py)


@dataclass
class Call:
    """One HTTP request being handled: for metrics and logs."""

    endpoint: str
    t0: float = field(default_factory=time.perf_counter)
    model: str = ""
    records_itself: bool = False  # metrics recorded by the handler (with generation timings) or its stream
    route: RouteDecision | None = None  # set when the virtual model chose `model` (x-velollm-route)
    backend: str = ""  # the router's local replica that ran it (x-velollm-backend; a remote one sets its own)
    # Set when the router chose this process's engine: sends the request to the other replicas instead, when
    # the engine refuses it before its first byte (queue full, engine dead).
    local_fallback: Callable[[BaseException], Awaitable[Response]] | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


Handler = Callable[["Request", AppState, Call], Awaitable["Response"]]


def endpoint(name: str) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Wraps a handler: typed errors -> wire format (by path), and the per-request metrics."""

    def wrap(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def route(request: Request) -> Response:
            from starlette.responses import Response

            state: AppState = request.app.state.velollm
            call = Call(name)
            try:
                response = await _answer(fn, request, state, call)
            except ClientDisconnected:
                logger.info("%s: client disconnected, request cancelled", name)
                response = Response(status_code=STATUS_CLIENT_CLOSED)
            except Exception as exc:  # noqa: BLE001 (every failure is answered in the client's wire format)
                err = to_api_error(exc)
                if err.status >= 500:
                    logger.warning("%s failed with %d: %s", name, err.status, err.message)
                response = error_response(api_of(request.url.path), err)
            if call.route is not None:
                response.headers["x-velollm-route"] = call.route.header()
            if call.backend:
                response.headers["x-velollm-backend"] = call.backend
            if not call.records_itself:
                state.metrics.observe_request(call.model, name, response.status_code, call.elapsed())
            return response

        route.__name__ = fn.__name__
        return route

    return wrap


async def _answer(fn: Handler, request: Request, state: AppState, call: Call) -> Response:
    """The handler's answer; when the local replica the router chose refused the request before any byte
    was sent (Overloaded, EngineDead), the other replicas' answer, as for a remote replica failing so."""
    try:
        return await fn(request, state, call)
    except (Overloaded, EngineDead) as exc:
        fallback, call.local_fallback = call.local_fallback, None
        if fallback is None:
            raise
        logger.warning("%s: the local replica %s refused the request (%s); trying the other replicas",
                       call.endpoint, call.backend, exc)
        call.backend, call.records_itself = "", False
        return await fallback(exc)


async def read_json(request: Request) -> dict[str, Any]:
    handed = take_handed(request.scope)  # parsed and checked by the response cache in front
    if handed is not None:
        return handed
    body = await request.body()
    if not body.strip():
        raise APIError(400, "missing request body")
    # 400s for what Python's json takes but no client means (NaN, depth, surrogates); a big body off the loop
    data = await parse_json_off_loop(body)
    if not isinstance(data, dict):
        raise APIError(400, f"request body must be a JSON object, got {type(data).__name__}")
    return data


# A body with a list longer than this (messages, prompts, token ids, input items) is checked on a worker thread
# (`parse_off_loop`): the chat rules take about 2 us a message, and 200,000 messages held the event loop 0.5 s.
OFF_LOOP_ITEMS = 1000

_Parsed = TypeVar("_Parsed")


async def parse_off_loop(parse: Callable[[Any], _Parsed], body: Any) -> _Parsed:
    """`parse(body)` (a request's native rules, which read nothing but the body), on a worker thread when the
    body holds a list of more than OFF_LOOP_ITEMS items, so that the other requests are served meanwhile."""
    lists = (len(v) for v in body.values() if isinstance(v, list)) if isinstance(body, dict) else ()
    if max(lists, default=0) <= OFF_LOOP_ITEMS:
        return parse(body)
    return await asyncio.to_thread(parse, body)


async def route(request: Request, state: AppState, call: Call, name: str, keep_alive: Any = None,
                body: dict[str, Any] | None = None) -> Target:
    """Where the request goes, from its model name alone (before the rest of the body is interpreted).

    The virtual model of [routing] (with `body` given) first picks a model from the body's features;
    `body["model"]` then names the chosen model, so that parsing, forwarding and the answer report it.
    A native embedding model asked to generate is a 400 (it has no tokenizer template nor LM head).
    """
    target = await _route(request, state, call, name, keep_alive, body)
    what = _GENERATES.get(call.endpoint)
    if what and isinstance(target, NativeTarget) and getattr(target.model.engine, "is_embedding", False):
        raise InvalidRequest(f'"{target.model.name}" does not support {what}', param="model")
    return target


async def _route(request: Request, state: AppState, call: Call, name: str, keep_alive: Any,
                 body: dict[str, Any] | None) -> Target:
    call.model = name
    router = state.router
    if router is not None and body is not None and router.handles(name):
        decision = await router.decide(body, request.url.path)
        call.route, call.model, name = decision, decision.model, decision.model
        state.metrics.observe_route(decision.route, decision.model)
        body["model"] = name
        body.pop("name", None)  # Ollama's older spelling of `model`
        try:
            target = await state.models.route(name, keep_alive)
        except ModelNotFound as exc:
            raise ModelNotFound(f"{exc} (chosen for '{router.name}' by route '{decision.route}')") from exc
        for other in reversed(router.policy.models):  # the next request may route elsewhere: load ahead
            if other != name:
                state.models.predict(other, "routed to by " + router.name)
        return target
    return await state.models.route(name, keep_alive)


# (request, state, call, the request parsed by the native rules, the ServedModel) -> response
NativeHandler = Callable[..., Awaitable["Response"]]


def routed(model_of: Callable[[Any], str], parse: Callable[[Any], Any],
           defaults: Callable[[Any, ServedModel], Any] | None = None) -> Callable[[NativeHandler], Handler]:
    """Wraps a generation handler: the body is routed by its model name first (`model_of` reads it in
    the route's wire format); an upstream model gets the body as sent, a native one runs the handler
    with the body parsed by the native rules (`parse`) and the model, after `defaults` fills in the
    model's own values for what the body leaves out."""

    def wrap(fn: NativeHandler) -> Handler:
        async def handler(request: Request, state: AppState, call: Call) -> Response:
            body = await read_json(request)
            target = await route(request, state, call, model_of(body), body=body)
            if isinstance(target, UpstreamTarget):
                answer = await forward_or_local(request, state, call, target, body)
                if not isinstance(answer, ServedModel):
                    return answer
                served = answer
            else:
                served = target.model
            native_body = body if defaults is None else defaults(body, served)
            return await fn(request, state, call, await parse_off_loop(parse, native_body), served)

        handler.__name__ = fn.__name__
        return handler

    return wrap


async def forward(request: Request, state: AppState, call: Call, target: UpstreamTarget,
                  body: dict[str, Any], path: str | None = None) -> Response:
    """The upstream's answer to the request, its body as the client sent it (to `path`, if given)."""
    model = call.model
    return await target.forward(request, body, lambda outcome: state.metrics.observe_tool_call(model, outcome), path)


async def forward_or_local(request: Request, state: AppState, call: Call, target: UpstreamTarget,
                           body: dict[str, Any], path: str | None = None) -> Response | ServedModel:
    """The upstream's answer (from `path`, if given); or, for a native model that the router balances with remote
    replicas (`target.local`) when it chose this process's engine, that model to run the request on natively (its
    engine leased: the router's slot is released when the response is complete)."""
    local = target.local
    if local is None:
        return await forward(request, state, call, target, body, path)
    model = call.model
    try:
        return await target.forward(request, body, lambda outcome: state.metrics.observe_tool_call(model, outcome),
                                    path, local=True)
    except ServeLocally as exc:
        chosen = exc  # (the except clause unbinds `exc`; the fallback below runs later)
        call.backend = chosen.backend
        sent = copy.deepcopy(body)  # as the client sent it: the native path may rewrite the body it parses

        async def elsewhere(refused: BaseException) -> Response:
            chosen.failed(refused)
            chosen.release()
            return await forward(request, state, call, target, sent, path)  # without local=True: remote replicas only

        call.local_fallback = elsewhere
        return replace(local, engine=EngineLease(local.engine, chosen.release))


def observe(state: AppState, call: Call, choices: Iterable[ChoiceState], status: int) -> None:
    """The request's metrics, with the generation timings of its choices."""
    state.metrics.observe_request(call.model, call.endpoint, status, call.elapsed())
    for c in choices:
        if c.t_first is not None:
            decode = c.t_last - c.t_first if c.t_last is not None else None
            state.metrics.observe_generation(call.model, c.t_first - call.t0, decode, len(c.token_ids))
