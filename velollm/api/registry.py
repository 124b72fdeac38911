"""ModelRegistry: the one place that decides where a request goes, from its model name alone.

`route(name)` runs before the request body is interpreted and returns a typed target
(velollm/api/targets.py): a `NativeTarget` (a model VeloLLM runs: the body is then parsed with the
native rules) or an `UpstreamTarget` (the body goes to the upstream as sent, converted only in wire
format, and the upstream decides what it supports: images, think, format, options...). Models given
with --model are loaded at start-up and pinned. Any other name VeloLLM can run is loaded on demand
(velollm/api/on_demand.py), and the request holds an `EngineLease` until its generation stream closes.
A name that cannot run natively goes to the upstream (velollm/proxy) when it serves it, else 404.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velollm.api.model_identity import ModelIdentities
from velollm.api.model_pool import ModelPool
from velollm.api.on_demand import OnDemand, OnDemandModels
from velollm.api.served_model import ServedModel
from velollm.api.targets import NativeTarget, Target, Upstream, UpstreamTarget
from velollm.context.model_prefetch import ModelPrefetcher
from velollm.errors import ModelNotFound, PathNotAllowed, UnsupportedModel
from velollm.wire.names import name_key

if TYPE_CHECKING:
    from velollm.config import EngineConfig

logger = logging.getLogger(__name__)


class ModelRegistry:
    """Pinned models, on-demand models (OnDemandModels) and the upstream; load state for /health."""

    def __init__(self, upstream: Upstream | None = None, on_demand: OnDemand | None = None) -> None:
        self.upstream = upstream
        self._models: dict[str, ServedModel] = {}  # name_key(served name) -> model
        self._ready = asyncio.Event()
        self.load_error: str | None = None
        # /api/delete, copy and create change the store one at a time (in worker threads): a delete removes
        # the blobs no other manifest names, which a create running beside it may be naming that moment
        self.store_lock = threading.Lock()
        self.on_demand_models = OnDemandModels(on_demand, self._served_otherwise) if on_demand is not None else None
        # what each name stands for now (the response cache's keys)
        self.identities = ModelIdentities(self, on_demand.identify if on_demand is not None else None)
        # Told each name `forget` is given (the response cache deletes its entries: velollm/cache/stale_purge.py).
        self.forgotten: list[Callable[[str], None]] = []

    @property
    def on_demand(self) -> OnDemand | None:
        return self.on_demand_models.config if self.on_demand_models is not None else None

    @property
    def pool(self) -> ModelPool | None:
        return self.on_demand_models.pool if self.on_demand_models is not None else None

    @property
    def prefetcher(self) -> ModelPrefetcher | None:
        return self.on_demand_models.prefetcher if self.on_demand_models is not None else None

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
        resolved = self.on_demand_models.resolved_name(name) if self.on_demand_models is not None else None
        if resolved is not None:
            return resolved
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
            if self.balanced(name):
                return UpstreamTarget(self.upstream, name, local=served)  # type: ignore[arg-type]
            return NativeTarget(served)
        if self.on_demand_models is not None and not self.upstream_first(name):
            try:
                return NativeTarget(await self.on_demand_models.acquire(name, keep_alive))
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
        if self.on_demand_models is None:
            return False
        try:
            await self.on_demand_models.resolve(name)
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
        on_demand = self.on_demand_models
        if on_demand is not None and not self.upstream_first(name):
            try:
                canonical = await on_demand.resolve(name)
            except ModelNotFound:
                pass
            except UnsupportedModel as exc:
                return await self._elsewhere(name, exc)
            else:
                loaded = on_demand.loaded(canonical)
                if loaded is None and prefetch:
                    on_demand.predict(canonical, "shown")
                return NativeTarget(loaded or await on_demand.describe(canonical))
        return await self._elsewhere(name)

    def predict(self, name: str, reason: str) -> None:
        """A client is likely to ask for `name` soon: load it ahead when a slot is free (never blocks)."""
        if self.on_demand_models is not None:
            self.on_demand_models.predict(name, reason)

    def _served_otherwise(self, name: str) -> bool:
        """A request for `name` would not load it on demand: a pinned model, or a backend answers first."""
        return self.find(name) is not None or self.upstream_first(name)

    def balanced(self, name: str) -> bool:
        """A pinned model that the configured backends of `--config` balance with remote replicas of
        the same name (velollm.router's local replica) rather than letting it answer every request."""
        balances = getattr(self.upstream, "balances", None)
        return balances is not None and balances(name)

    def upstream_first(self, name: str) -> bool:
        """The configured backends of `--config` (velollm.router) answer the names they serve before any
        on-demand native load (pinned models still come first); a plain `--upstream` comes after both."""
        if not getattr(self.upstream, "before_on_demand", False):
            return False
        return self.upstream.listed(name) is not None  # type: ignore[union-attr]

    async def unload(self, served: ServedModel) -> None:
        """Unload an on-demand model now (at once if idle, else when its requests end); pinned ones stay."""
        if self.on_demand_models is not None and self.find(served.name) is None:
            await self.on_demand_models.pool.unload(served.name)

    def store_root(self) -> Path | None:
        """The Ollama store this server loads on-demand models from ($OLLAMA_MODELS, read now), where
        /api/delete, copy, create and blobs act without an Ollama upstream; None when it loads none
        (--proxy-only, engines given)."""
        if self.on_demand_models is None:
            return None
        from velollm.engine.loader.ollama_store import models_dir

        return models_dir()

    async def forget(self, name: str) -> None:
        """The store is changing for `name`: its on-demand model unloads (when idle; else when its requests
        end), and names resolve afresh. Pinned (--model) models are not touched (`pinned` says which)."""
        if self.on_demand_models is not None:
            await self.on_demand_models.forget(name)
        self.identities.clear()
        for listener in self.forgotten:
            listener(name)

    def store_changed(self) -> None:
        """After a change to the store: names resolve afresh (listings read the store at each call)."""
        if self.on_demand_models is not None:
            self.on_demand_models.changed()
        self.identities.clear()

    async def identity(self, name: str) -> str:
        """What `name` stands for now (velollm/api/model_identity.py), from memory; "" when only the name is known."""
        return await self.identities.of(name)

    def pinned(self, name: str) -> ServedModel | None:
        """The --model model served as `name` or loaded from it (its spec), if any."""
        key = name_key(name)
        return self.find(name) or next((m for m in self._models.values() if name_key(m.spec) == key), None)

    async def _elsewhere(self, name: str, unsupported: UnsupportedModel | None = None) -> UpstreamTarget:
        """The upstream when it serves `name`, else the UnsupportedModel (it says why) or a 404."""
        if self.upstream is not None:
            reason = f"cannot run it natively: {unsupported}" if unsupported is not None else ""
            upstream_name = await self.upstream.find(name, reason)
            if upstream_name is not None:
                return UpstreamTarget(self.upstream, upstream_name)
        if unsupported is not None:
            raise unsupported
        because = getattr(self.upstream, "not_listed_because", None)  # optional for Upstream implementations
        reason = because() if because is not None else None
        raise ModelNotFound(f"model '{name}' not found" + (f" ({reason})" if reason else ""))

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
        if self.on_demand_models is not None:
            await self.on_demand_models.close()
        self.shutdown_all()

    def shutdown_all(self) -> None:
        for served in self._models.values():
            try:
                served.engine.shutdown()
            except Exception:  # shutting down: report and go on with the others
                logger.exception("shutting down %r failed", served.name)
