"""Which server answers a requested model name: VeloLLM itself, the upstream, or nobody (404).

Ollama-like resolution: a name VeloLLM can run natively is served natively; otherwise the upstream
serves it if it was in the upstream's last successful listing, or always under --proxy-only; else 404.
An upstream that is down gives 502 for the names it listed (the forward step raises that), and the
first request after it comes back succeeds: there is no cool-down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from velollm.errors import ModelNotFound, UnsupportedModel
from velollm.proxy.upstream import Upstream, name_key

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    """Where a request goes; `model` is the name to send (the upstream's own spelling when listed)."""

    target: Literal["native", "upstream"]
    model: str
    reason: str = ""


class ModelRouter:
    """Decides native vs upstream per model name. The API's model registry owns native resolution."""

    def __init__(self, upstream: Upstream | None, *, proxy_only: bool = False) -> None:
        if proxy_only and upstream is None:
            raise ValueError("--proxy-only needs an upstream")
        self.upstream = upstream
        self.proxy_only = proxy_only
        self._explained: set[str] = set()

    async def route(self, name: str, *, native: bool) -> Route:
        """`native`: the registry found `name` runnable here (store, HF cache, path, built-in)."""
        if native and not self.proxy_only:
            return Route("native", name)
        reason = "--proxy-only" if self.proxy_only else "VeloLLM has no model of that name"
        return await self._upstream_route(name, reason)

    async def fallback(self, name: str, error: Exception) -> Route:
        """The native path raised `error` (ModelNotFound, UnsupportedModel): try the upstream.

        Raises ModelNotFound when the upstream does not have the model either.
        """
        reason = f"cannot run it natively: {error}" if isinstance(error, UnsupportedModel) else str(error)
        return await self._upstream_route(name, reason)

    async def _upstream_route(self, name: str, reason: str) -> Route:
        if self.upstream is None:
            raise ModelNotFound(f"model '{name}' not found")
        listed = _listed_name(self.upstream, name)
        if listed is None and not self.proxy_only:
            # A model pulled into the upstream since the last listing must work at once.
            await self.upstream.list_models()
            listed = _listed_name(self.upstream, name)
            if listed is None:
                raise ModelNotFound(f"model '{name}' not found")
        if name not in self._explained:
            if len(self._explained) > 4096:
                self._explained.clear()
            self._explained.add(name)
            logger.info("model %r goes to upstream %s (%s)", name, self.upstream.url, reason)
        # Ollama answers with the name as sent; an OpenAI server only knows its own ids.
        use_listed = listed is not None and self.upstream.known_kind == "openai"
        return Route("upstream", listed if use_listed else name, reason)


def _listed_name(upstream: Upstream, name: str) -> str | None:
    listing = upstream.last_listing
    if listing is None:
        return None
    if name in listing.names:
        return name
    wanted = name_key(name)
    return next((n for n in listing.names if name_key(n) == wanted), None)
