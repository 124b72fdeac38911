"""ModelRegistry: the one place that decides where a request goes, from its model name alone.

`route(name)` runs before the request body is interpreted and returns a typed target: a
`NativeTarget` (a model VeloLLM runs: the body is then parsed with the native rules) or an
`UpstreamTarget` (the body goes to the upstream as sent, converted only in wire format, and the
upstream decides what it supports: images, think, format, options...). Models given with --model
are loaded at start-up and pinned. Any other name VeloLLM can run (Ollama store, HF cache, a path,
demo) is loaded on demand into a ModelPool (at most --max-loaded-models, unloaded after keep_alive),
and the request holds an `EngineLease` until its generation stream closes. A name that cannot run
natively goes to the upstream (velollm/proxy) when it serves it, else 404.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, Union, runtime_checkable

from velollm.api.lease import EngineLease
from velollm.api.model_pool import ModelPool
from velollm.api.served_model import ServedModel, SourceView
from velollm.context.model_prefetch import ModelPrefetcher
from velollm.errors import ModelNotFound, PathNotAllowed, UnsupportedModel
from velollm.wire.names import name_key

if TYPE_CHECKING:
    from starlette.requests import Request

    from velollm.config import EngineConfig
    from starlette.responses import Response

logger = logging.getLogger(__name__)

NEGATIVE_TTL_S = 5.0  # a name that did not resolve is looked up again after this (a pull lands quickly)
UNSUPPORTED_TTL_S = 60.0  # a model that failed to load as unsupported is not retried natively before this


@runtime_checkable
class Upstream(Protocol):
    """What the proxy (velollm.proxy.gateway.UpstreamGateway) provides for models VeloLLM does not run.

    `find` -> the name to send upstream, or None when the upstream does not serve `name`; `forward`
    relays the request in the wire format of its path (converting when the upstream speaks the other
    API) and returns the upstream's response; the listings are already in the asking route's format.
    """

    async def find(self, name: str, reason: str = "") -> str | None: ...

    def listed(self, name: str) -> str | None: ...

    async def forward(self, request: Request, body: dict[str, Any], model: str | None = None,
                      tool_outcome: Callable[[str], None] | None = None, path: str | None = None) -> Response: ...

    async def ollama_tags(self) -> list[dict[str, Any]]: ...

    async def openai_models(self) -> list[dict[str, Any]]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class NativeTarget:
    """A model VeloLLM runs itself."""

    model: ServedModel


@dataclass(frozen=True)
class UpstreamTarget:
    """A model the upstream serves; `model` is the name to send (the upstream's own spelling).

    `local`: the native model of the same name when the router balances it with remote replicas
    (velollm.router: `balances`); `forward(..., local=True)` may then raise ServeLocally, and the request
    runs on `local` (handler.forward_or_local)."""

    upstream: Upstream
    model: str
    local: ServedModel | None = None

    async def forward(self, request: Request, body: dict[str, Any],
                      tool_outcome: Callable[[str], None] | None = None, path: str | None = None,
                      local: bool = False) -> Response:
        if local and self.local is not None:
            return await self.upstream.forward(request, body, self.model, tool_outcome, path,  # type: ignore[call-arg]
                                               local=self.local.engine)
        return await self.upstream.forward(request, body, self.model, tool_outcome, path)


Target = Union[NativeTarget, UpstreamTarget]


@dataclass(frozen=True)
class OnDemand:
    """How names outside --model are served. Both callables block (they run in worker threads).

    `resolve(name)` -> the canonical name to load (cheap: no weights read), or ModelNotFound /
    UnsupportedModel; `load(name)` -> a started engine.
    """

    resolve: Callable[[str], str]
    load: Callable[[str], Any]
    max_loaded_models: int = 1
    keep_alive_s: float = 300.0
    # canonical name -> its ModelSource, no weights read (/api/show of a model not loaded);
    # None: velollm.engine.loader.resolve.resolve_model
    describe: Callable[[str], Any] | None = None
    host_cache_bytes: int = 0  # weights of evicted CPU models kept asleep for a fast re-load
    prefetch: bool = True  # predicted models loaded ahead into free slots (velollm.context.model_prefetch)
    # canonical name -> whether it may load ahead (memory to spare; blocking); None: always
    prefetch_room: Callable[[str], bool] | None = None


class ModelRegistry:
    """Pinned models, on-demand models (a ModelPool) and the upstream; load state for /health."""

    def __init__(self, upstream: Upstream | None = None, on_demand: OnDemand | None = None) -> None:
        self.upstream = upstream
        self.on_demand = on_demand
        self._models: dict[str, ServedModel] = {}  # name_key(served name) -> model
        self._ready = asyncio.Event()
        self.load_error: str | None = None
        self.pool: ModelPool | None = None
        self.prefetcher: ModelPrefetcher | None = None
        # name -> (expiry on the monotonic clock, canonical name or the error it raised)
        self._resolved: dict[str, tuple[float, str | Exception]] = {}
        self._described: dict[str, ServedModel] = {}  # canonical name -> a SourceView, for /api/show
        if on_demand is not None:
            self.pool = ModelPool(self._load_on_demand, on_demand.max_loaded_models, on_demand.keep_alive_s,
                                  on_demand.host_cache_bytes)
            self.prefetcher = ModelPrefetcher(self.pool, self._prefetchable, enabled=on_demand.prefetch)
            self.pool.on_slot_freed = self._slot_freed

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def mark_ready(self) -> None:
        self._ready.set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def add(self, name: str, engine: Any, *, spec: str = "", load_duration_s: float = 0.0) -> ServedModel:
        if name_key(name) in self._models:
            raise ValueError(f"model {name!r} is already served")
        served = ServedModel(name=name, engine=engine, spec=spec or name, load_duration_s=load_duration_s)
        self._models[name_key(name)] = served
        return served

    def find(self, name: str) -> ServedModel | None:
        """A pinned model answering to `name` (Ollama's name rule; on-demand ones go through `route`)."""
        return self._models.get(name_key(name))

    def known_name(self, name: str) -> str | None:
        """The name of a model this server knows as `name`, without I/O: pinned, resolved to a model
        on disk (loaded or not), or in the upstream's last listing; None for any other name. Client-chosen
        names must not become metric labels: only these do."""
        served = self.find(name)
        if served is not None:
            return served.name
        hit = self._resolved.get(name)
        if hit is not None and isinstance(hit[1], str):
            return hit[1]
        listed = getattr(self.upstream, "listed", None)  # optional for Upstream implementations
        return listed(name) if listed is not None else None

    def models(self) -> list[ServedModel]:
        """Every loaded model: pinned first, then the on-demand ones."""
        pooled = [m.engine for m in self.pool.loaded()] if self.pool is not None else []
        return list(self._models.values()) + pooled

    def running(self) -> list[tuple[ServedModel, float]]:
        """Loaded models with their unload time (unix seconds; math.inf = never), as /api/ps lists them."""
        out = [(m, math.inf) for m in self._models.values()]
        if self.pool is not None:
            now = time.time()
            for entry in self.pool.loaded():
                # In use: the keep-alive clock has not started; report it as if it started now.
                out.append((entry.engine, entry.expires_at if entry.expires_at is not None
                            else now + entry.keep_alive))
        return out

    async def route(self, name: str, keep_alive: Any = None) -> Target:
        """Where a request for `name` goes, decided before its body is interpreted: the native model
        of that name (loading it on demand), else the upstream if it serves it, else ModelNotFound
        (404). `keep_alive`: the request's, as sent (parsed, as Ollama does, only when a model is
        loaded on demand for it; an upstream target gets it as sent); None = the server default.
        """
        if not self.ready and self.load_error is None:
            await self.wait_ready()  # a request that arrives while loading waits, as in Ollama
        served = self.find(name)
        if served is not None:
            if self._balanced(name):
                return UpstreamTarget(self.upstream, name, local=served)  # type: ignore[arg-type]
            return NativeTarget(served)
        if self.pool is not None and not self._upstream_first(name):
            try:
                return NativeTarget(await self._acquire(name, keep_alive))
            except PathNotAllowed:
                raise  # no upstream serves a path of this machine; the message says why
            except ModelNotFound:
                pass
            except UnsupportedModel as exc:
                return await self._elsewhere(name, exc)
        return await self._elsewhere(name)

    async def present(self, name: str) -> bool:
        """Whether `name` is a model this process runs itself (pinned, or found on disk for on-demand
        loading), no remote backend of `--config` serving it too: `/api/pull` of it is then Ollama's
        pull of a model already present. Never loads anything."""
        if not self.ready and self.load_error is None:
            await self.wait_ready()
        listed = getattr(self.upstream, "listed", None)
        if getattr(self.upstream, "before_on_demand", False) and listed is not None and listed(name) is not None:
            return False
        if self.find(name) is not None:
            return True
        if self.pool is None:
            return False
        try:
            await self._resolve(name)
        except (ModelNotFound, UnsupportedModel):
            return False
        return True

    async def describe(self, name: str, prefetch: bool = False) -> Target:
        """Like `route`, but never loads a model: a loaded one, else an on-demand one described from
        its resolved source (a ServedModel whose engine is a SourceView), else the upstream, else
        ModelNotFound. `prefetch` (/api/show): an on-demand model not loaded is then loaded ahead in
        the background when a slot is free."""
        if not self.ready and self.load_error is None:
            await self.wait_ready()
        served = self.find(name)
        if served is not None:
            return NativeTarget(served)
        if self.pool is not None and not self._upstream_first(name):
            try:
                canonical = await self._resolve(name)
            except ModelNotFound:
                pass
            except UnsupportedModel as exc:
                return await self._elsewhere(name, exc)
            else:
                loaded = next((e.engine for e in self.pool.loaded() if e.name == canonical), None)
                if loaded is None and prefetch:
                    self.predict(canonical, "shown")
                return NativeTarget(loaded or await self._describe(canonical))
        return await self._elsewhere(name)

    def predict(self, name: str, reason: str) -> None:
        """A client is likely to ask for `name` soon: load it ahead when a slot is free (never blocks)."""
        if self.prefetcher is not None:
            self.prefetcher.predict(name, reason)

    async def _prefetchable(self, name: str) -> str | None:
        """The pool's name for `name` when a request for it would load it on demand, else None."""
        if self.find(name) is not None or self._upstream_first(name):
            return None
        try:
            canonical = await self._resolve(name)
        except (ModelNotFound, UnsupportedModel, PathNotAllowed):
            return None
        room = self.on_demand.prefetch_room if self.on_demand is not None else None
        parked = self.pool is not None and canonical in self.pool.parked  # its weights are in memory already
        if room is not None and not parked and not await asyncio.to_thread(room, canonical):
            logger.info("not loading model %r ahead: less than twice its size is free", canonical)
            return None
        return canonical

    def _slot_freed(self) -> None:
        """A keep_alive ran out and freed a slot: the parked model a request used last comes back ahead (recent usage)."""
        name = self.pool.most_recent_parked() if self.pool is not None else None
        if name is not None:
            self.predict(name, "recently used")

    def _balanced(self, name: str) -> bool:
        """A pinned model that the configured backends of `--config` balance with remote replicas of
        the same name (velollm.router's local replica) rather than letting it answer every request."""
        balances = getattr(self.upstream, "balances", None)
        return balances is not None and balances(name)

    def _upstream_first(self, name: str) -> bool:
        """The configured backends of `--config` (velollm.router) answer the names they serve before any
        on-demand native load (pinned models still come first); a plain `--upstream` comes after both."""
        if not getattr(self.upstream, "before_on_demand", False):
            return False
        return self.upstream.listed(name) is not None  # type: ignore[union-attr]

    async def unload(self, served: ServedModel) -> None:
        """Unload an on-demand model now (at once if idle, else when its requests end); pinned ones stay."""
        if self.pool is not None and self.find(served.name) is None:
            await self.pool.unload(served.name)

    async def _elsewhere(self, name: str, unsupported: UnsupportedModel | None = None) -> UpstreamTarget:
        """The upstream when it serves `name`, else the UnsupportedModel (it says why) or a 404."""
        if self.upstream is not None:
            reason = f"cannot run it natively: {unsupported}" if unsupported is not None else ""
            upstream_name = await self.upstream.find(name, reason)
            if upstream_name is not None:
                return UpstreamTarget(self.upstream, upstream_name)
        if unsupported is not None:
            raise unsupported
        raise ModelNotFound(f"model '{name}' not found")

    async def _describe(self, canonical: str) -> ServedModel:
        served = self._described.get(canonical)
        if served is None:
            served = await asyncio.to_thread(self._describe_source, canonical)
            if len(self._described) > 256:
                self._described.clear()
            self._described[canonical] = served
        return served

    def _describe_source(self, canonical: str) -> ServedModel:
        assert self.on_demand is not None
        describe = self.on_demand.describe
        if describe is None:
            from velollm.engine.loader.resolve import resolve_model

            describe = resolve_model
        described = describe(canonical)
        view = described if getattr(described, "is_embedding", False) else SourceView(described)
        return ServedModel(name=canonical, engine=view, spec=canonical,
                           loaded_at=view.source.info.modified_at or time.time())

    async def _acquire(self, name: str, keep_alive: Any) -> ServedModel:
        assert self.pool is not None
        canonical = await self._resolve(name)
        try:
            pooled: ServedModel = await self.pool.acquire(canonical, keep_alive)
        except UnsupportedModel as exc:  # e.g. it does not fit: let the upstream answer for a while
            self._resolved[name] = (time.monotonic() + UNSUPPORTED_TTL_S, exc)
            raise
        except Exception:
            self._resolved.pop(name, None)  # resolve again next time (the file may have changed)
            raise
        lease = EngineLease(pooled.engine, lambda: self.pool.release(canonical))  # type: ignore[union-attr]
        return replace(pooled, engine=lease)

    async def _resolve(self, name: str) -> str:
        assert self.on_demand is not None
        hit = self._resolved.get(name)
        if hit is not None and hit[0] > time.monotonic():
            if isinstance(hit[1], Exception):
                raise type(hit[1])(str(hit[1]))  # a fresh one: re-raising one object grows its traceback
            return hit[1]
        if len(self._resolved) > 4096:  # names are client-chosen: bound the cache
            self._resolved.clear()
        try:
            canonical = await asyncio.to_thread(self.on_demand.resolve, name)
        except (ModelNotFound, UnsupportedModel) as exc:
            self._resolved[name] = (time.monotonic() + NEGATIVE_TTL_S, exc)
            raise
        self._resolved[name] = (math.inf, canonical)
        return canonical

    def _load_on_demand(self, name: str) -> ServedModel:
        """The ModelPool's load function (worker thread)."""
        assert self.on_demand is not None
        t0 = time.perf_counter()
        engine = self.on_demand.load(name)
        served = ServedModel(name=name, engine=engine, spec=name, load_duration_s=time.perf_counter() - t0)
        logger.info("model %r loaded on demand in %.1fs (max_model_len=%s)", name, served.load_duration_s,
                    getattr(engine, "max_model_len", "?"))
        return served

    async def load(self, specs: tuple[str, ...], names: tuple[str, ...], engine_config: EngineConfig) -> None:
        """Loads and starts each pinned model in a worker thread (the engine load blocks)."""
        from velollm.api.native_models import load_native

        for spec, name in zip(specs, names):
            t0 = time.perf_counter()
            logger.info("loading model %s as %r", spec, name)
            engine = await asyncio.to_thread(load_native, spec, engine_config, served_name=name, allow_paths=True)
            served = self.add(name, engine, spec=spec, load_duration_s=time.perf_counter() - t0)
            logger.info("model %r ready in %.1fs (max_model_len=%d)", name, served.load_duration_s,
                        engine.max_model_len)

    def start_all(self) -> None:
        for served in self._models.values():
            served.engine.start()

    async def close(self) -> None:
        """Unloads the on-demand models and shuts the pinned ones down."""
        if self.prefetcher is not None:
            await self.prefetcher.close()
        if self.pool is not None:
            try:
                await self.pool.close()
            except Exception:  # shutting down: report and go on
                logger.exception("unloading on-demand models failed")
        self.shutdown_all()

    def shutdown_all(self) -> None:
        for served in self._models.values():
            try:
                served.engine.shutdown()
            except Exception:  # shutting down: report and go on with the others
                logger.exception("shutting down %r failed", served.name)
