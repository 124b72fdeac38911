"""ModelIdentities: what a model name stands for now, for the response cache's keys (velollm/cache/key.py).

A name can come to point at another model: `ollama cp y x`, `ollama rm x && ollama create x`, a pull of
a newer version of a tag, through VeloLLM or behind its back. The cache keys an answer by the model's
identity as well as its name, so that such a change makes the old answers unreachable at once. The
identity is the one of the model that would answer, decided as ModelRegistry.route decides, without loading:

- a pinned (--model) model, an on-demand one loaded: its engine's source (ModelInfo.digest: the Ollama
  manifest digest; an HF folder's files; else the weights file's path, size and mtime). What such an
  engine answers with does not change until it goes, whatever happens to the files;
- an on-demand model not loaded, or parked (asleep in host memory: it wakes only while its files are the
  ones it was loaded from, ModelPool drops it otherwise): the same, read from disk (the manifest, a stat) at most once per
  NATIVE_TTL_S per name, and at once after a change VeloLLM makes itself (`clear`, from the registry);
- an upstream's model: the digest of its last listing (Ollama's /api/tags, another VeloLLM's); listings are
  fetched again after VeloLLM's own changes and, in the background, when older than the upstream's
  IDENTITY_LISTING_MAX_AGE_S (velollm/proxy/gateway.py). An OpenAI-compatible upstream lists no digest:
  its names are the key ("").

Every answer comes from memory except the first one for a name (and once per NATIVE_TTL_S for a
model not loaded): no request pays a file-system or network round trip of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from velollm.errors import VeloLLMError

if TYPE_CHECKING:
    from velollm.api.registry import ModelRegistry

logger = logging.getLogger(__name__)

NATIVE_TTL_S = 2.0  # how stale an on-disk identity may be after a change made behind VeloLLM's back
MAX_NAMES = 4096  # names are client-chosen: bound the table


def file_identity(path: str, size: int, modified_at: float) -> str:
    return f"file:{path}:{size}:{modified_at}"


def info_identity(info: Any) -> str:
    """A ModelInfo's identity: its digest, else its file's path, size and modification time."""
    digest = str(getattr(info, "digest", "") or "")
    if digest:
        return digest
    path = getattr(info, "path", "")
    return file_identity(path, getattr(info, "size_bytes", 0), getattr(info, "modified_at", 0.0)) if path else ""


def engine_identity(engine: Any) -> str:
    """The identity of the model an engine (AsyncEngine, EmbeddingEngine) was loaded from."""
    return info_identity(getattr(getattr(engine, "source", None), "info", None))


class ModelIdentities:
    """`on_disk(canonical)`: the identity of an on-demand model from its files (blocking, worker thread)."""

    def __init__(self, registry: ModelRegistry, on_disk: Callable[[str], str] | None = None) -> None:
        self.registry = registry
        self.on_disk = on_disk
        self._read: dict[str, tuple[float, str]] = {}  # canonical name -> (monotonic expiry, identity)

    async def of(self, name: str) -> str:
        """The identity of the model `name` stands for now; "" when only the name is known (an OpenAI
        upstream, a name nobody serves: its request is then a 404, which is not cached)."""
        registry = self.registry
        if not registry.ready and registry.load_error is None:
            await registry.wait_ready()
        served = registry.find(name)
        if served is not None and not registry.balanced(name):
            return engine_identity(served.engine)
        native = await self._on_demand(name)
        if native is not None:
            return native
        identity = getattr(registry.upstream, "identity", None)  # optional for Upstream implementations
        if identity is None:
            return ""
        ready = getattr(registry.upstream, "identity_ready", None)  # the first listing, awaited (bounded)
        if ready is not None:
            await ready()
        return identity(name) or ""

    async def _on_demand(self, name: str) -> str | None:
        """The identity of the on-demand model `name` loads, None when it is not one."""
        models = self.registry.on_demand_models
        if models is None or self.registry.upstream_first(name):
            return None
        canonical = models.resolved_name(name)
        if canonical is None:
            try:
                canonical = await models.resolve(name)  # cached: the request's own route reuses it
            except VeloLLMError:  # not found, unsupported, a path refused: the upstream's, or a 404
                return None
        # A parked engine wakes only while its files are unchanged (ModelPool drops it otherwise): the files
        # say what answers, as for a model not loaded.
        loaded = models.loaded(canonical)
        if loaded is not None:
            return engine_identity(loaded.engine)
        return await self._from_disk(canonical)

    async def _from_disk(self, canonical: str) -> str:
        hit = self._read.get(canonical)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        if self.on_disk is None:
            return ""
        try:
            identity = await asyncio.to_thread(self.on_disk, canonical)
        except (VeloLLMError, OSError) as exc:  # its request reports the problem; cache the name alone meanwhile
            logger.debug("no identity for %r: %s", canonical, exc)
            identity = ""
        if len(self._read) > MAX_NAMES:
            self._read.clear()
        self._read[canonical] = (time.monotonic() + NATIVE_TTL_S, identity)
        return identity

    def clear(self) -> None:
        """The store changed (VeloLLM deleted, copied, created a model): files are read again on next use."""
        self._read.clear()
