"""Where a request goes, as ModelRegistry.route decides it from the model name: a `NativeTarget` (a model
VeloLLM runs) or an `UpstreamTarget` (relayed to the `Upstream`, the proxy's gateway)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from velollm.api.served_model import ServedModel

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response


@runtime_checkable
class Upstream(Protocol):
    """What the proxy (velollm.proxy.gateway.UpstreamGateway) provides for models VeloLLM does not run.

    `find` -> the name to send upstream, or None when the upstream does not serve `name`; `forward`
    relays the request in the wire format of its path (converting when the upstream speaks the other
    API) and returns the upstream's response; the listings are already in the asking route's format.
    Optional (read with getattr): `manages()` / `manage(request, body)`, Ollama's model management
    (/api/copy, delete, create, push, blobs; api/model_admin.py), `listed`, `before_on_demand`, `balances`,
    `not_listed_because()` (why a name it did not list may still be its own: said in the 404),
    `response_holder(id)` / `relay_stored(request, id)` (a response its own Responses API stored: a lookup of it
    answered there, None for an id it did not store; velollm/proxy/relayed_responses.py), `speaks_responses(model)`
    (whether a create goes to its own Responses API, else to its chat route: api/responses.py), `answered_by(answer)`
    (a router: the replica that answered, which `forward(..., replica=)` then asks first).
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
    runs on `local` (handler.forward_or_local). `replica`: the router's replica that is asked first (the one whose
    /v1/responses just said it has none answers the create's chat: api/responses_upstream.chat_target)."""

    upstream: Upstream
    model: str
    local: ServedModel | None = None
    replica: str | None = None

    async def forward(self, request: Request, body: dict[str, Any],
                      tool_outcome: Callable[[str], None] | None = None, path: str | None = None,
                      local: bool = False) -> Response:
        if local and self.local is not None:
            return await self.upstream.forward(request, body, self.model, tool_outcome, path,  # type: ignore[call-arg]
                                               local=self.local.engine)
        if self.replica is not None:
            return await self.upstream.forward(request, body, self.model, tool_outcome, path,  # type: ignore[call-arg]
                                               replica=self.replica)
        return await self.upstream.forward(request, body, self.model, tool_outcome, path)


Target = NativeTarget | UpstreamTarget
