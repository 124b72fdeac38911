"""UpstreamGateway: the proxy behind the API's `Upstream` protocol (velollm/api/models.py).

has_model / forward / ollama_tags / openai_models, on top of Upstream (client), ModelRouter
(listing-based decisions) and forward() (pass-through or conversion, streamed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from velollm.errors import ModelNotFound
from velollm.proxy.answer_repair import AnswerRepair
from velollm.proxy.forward import forward
from velollm.proxy.router import ModelRouter
from velollm.proxy.upstream import Upstream, UpstreamConfig

logger = logging.getLogger(__name__)


class UpstreamGateway:
    """Models VeloLLM does not run natively, answered by the upstream (any path of /v1/* or /api/*)."""

    def __init__(self, config: UpstreamConfig, *, proxy_only: bool = False) -> None:
        self.upstream = Upstream(config)
        self.router = ModelRouter(self.upstream, proxy_only=proxy_only)

    async def has_model(self, name: str, reason: str | None = None) -> bool:
        """True when the upstream should answer `name` (in its last listing, or --proxy-only).

        `reason`: why VeloLLM does not run it natively (e.g. an UnsupportedModel message), for the log.
        """
        try:
            if reason:
                await self.router.fallback(name, RuntimeError(reason))
            else:
                await self.router.route(name, native=False)
        except ModelNotFound:
            return False
        return True

    async def forward(self, request: Request, body: dict[str, Any]) -> Response:
        """Answer the request from the upstream, in the wire format of the path it came on."""
        path = request.url.path
        api = "openai" if path.startswith("/v1/") else "ollama"
        name = body.get("model") if isinstance(body, dict) else None
        if isinstance(name, str) and name:
            try:
                route = await self.router.route(name, native=False)
                if route.model != name:
                    # An OpenAI server knows only its own spelling of the id ("m" vs "m:latest").
                    body = {**body, "model": route.model}
            except ModelNotFound:
                pass  # let the upstream say so, in its own words
        repair = AnswerRepair.for_request(path, body, _tool_outcomes(request, str(name or "")))
        return await forward(request, self.upstream, api, path, body, repair)

    async def ollama_tags(self) -> list[dict[str, Any]]:
        listing = await self.upstream.list_models()
        return listing.as_ollama_tags() if listing else []

    async def openai_models(self) -> list[dict[str, Any]]:
        listing = await self.upstream.list_models()
        return listing.as_openai_models() if listing else []

    async def aclose(self) -> None:
        await self.upstream.aclose()


def _tool_outcomes(request: Request, model: str) -> Callable[[str], None] | None:
    """velollm_tool_calls_total of the API app serving `request` (None outside it: nothing to count)."""
    state = getattr(request.app.state, "velollm", None) if "app" in request.scope else None
    observe = getattr(getattr(state, "metrics", None), "observe_tool_call", None)
    if observe is None:
        return None
    return lambda outcome: observe(model, outcome)
