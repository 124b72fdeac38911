"""ModelRegistry: served model name -> running engine, and the hook where the proxy adds upstream fallback.

Handlers never hold engines themselves: they ask `await registry.route(name)` for every request, so
on-demand loading and upstream fallback (velollm/proxy) only have to change this one place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from velollm.errors import ModelNotFound

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

logger = logging.getLogger(__name__)


@runtime_checkable
class Upstream(Protocol):
    """What the proxy provides for models VeloLLM does not run itself.

    `forward` relays the request unchanged in wire format (path, body, streaming) and returns the
    upstream's response; the listings return entries already in the wire format of the route asking.
    """

    async def has_model(self, name: str) -> bool: ...

    async def forward(self, request: "Request", body: dict[str, Any]) -> "Response": ...

    async def ollama_tags(self) -> list[dict[str, Any]]: ...

    async def openai_models(self) -> list[dict[str, Any]]: ...


@dataclass
class ServedModel:
    """One natively served model."""

    name: str
    engine: Any  # velollm.engine.async_engine.AsyncEngine (duck-typed so tests can pass a stub)
    spec: str = ""
    loaded_at: float = field(default_factory=time.time)
    load_duration_s: float = 0.0


@dataclass(frozen=True)
class Route:
    """Where one request goes: a native model, or the upstream."""

    model: ServedModel | None = None
    upstream: Upstream | None = None


def _aliases(name: str) -> list[str]:
    # Ollama clients add ":latest" to untagged names and some strip it; treat both as the same model.
    if name.endswith(":latest"):
        return [name, name.removesuffix(":latest")]
    if ":" not in name.rsplit("/", 1)[-1]:
        return [name, f"{name}:latest"]
    return [name]


class ModelRegistry:
    """Served name -> ServedModel, plus load state for /health and an optional upstream."""

    def __init__(self, upstream: Upstream | None = None) -> None:
        self.upstream = upstream
        self._models: dict[str, ServedModel] = {}
        self._ready = asyncio.Event()
        self.load_error: str | None = None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def mark_ready(self) -> None:
        self._ready.set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def add(self, name: str, engine: Any, *, spec: str = "", load_duration_s: float = 0.0) -> ServedModel:
        if name in self._models:
            raise ValueError(f"model {name!r} is already served")
        served = ServedModel(name=name, engine=engine, spec=spec or name, load_duration_s=load_duration_s)
        self._models[name] = served
        return served

    def find(self, name: str) -> ServedModel | None:
        for alias in _aliases(name):
            if alias in self._models:
                return self._models[alias]
        return None

    def models(self) -> list[ServedModel]:
        return list(self._models.values())

    async def route(self, name: str, keep_alive_s: float | None = None) -> Route:
        """The native model of that name, else the upstream if it knows it, else ModelNotFound (404).

        `keep_alive_s` (Ollama's, parsed) is for on-demand loading; nothing unloads yet.
        """
        if not self.ready and self.load_error is None:
            await self.wait_ready()  # a request that arrives while loading waits, as in Ollama
        served = self.find(name)
        if served is not None:
            return Route(model=served)
        if self.upstream is not None and await self.upstream.has_model(name):
            return Route(upstream=self.upstream)
        raise ModelNotFound(f"model '{name}' not found")

    async def load(self, specs: tuple[str, ...], names: tuple[str, ...], engine_kwargs: dict[str, Any]) -> None:
        """Loads and starts each model in a worker thread (the engine load blocks)."""
        from velollm.engine.async_engine import AsyncEngine

        for spec, name in zip(specs, names):
            t0 = time.perf_counter()
            logger.info("loading model %s as %r", spec, name)
            engine = await asyncio.to_thread(AsyncEngine.from_model, spec, served_name=name, **engine_kwargs)
            engine.start()
            served = self.add(name, engine, spec=spec, load_duration_s=time.perf_counter() - t0)
            logger.info("model %r ready in %.1fs (max_model_len=%d)", name, served.load_duration_s,
                        engine.max_model_len)

    def start_all(self) -> None:
        for served in self._models.values():
            served.engine.start()

    def shutdown_all(self) -> None:
        for served in self._models.values():
            try:
                served.engine.shutdown()
            except Exception:  # shutting down: report and go on with the others
                logger.exception("shutting down %r failed", served.name)
