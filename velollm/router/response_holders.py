"""ResponseHolders: which backend holds a response that a replica's own Responses API stored (kind velollm, vLLM,
OpenAI: the create passed through), and the router's answers for one it cannot reach.

Its id lookups and a create continuing it go to that backend, whatever the policy (RelayedResponses, shared by the
backends' gateways, remembers the name and URL of the backend that answered each create). A backend renamed in the
configuration is found by its URL; one no longer configured (neither its name nor its URL) is a 502 that says so,
as an ejected holder's is: not OpenAI's 404 for an unknown id, which tells clients to drop the conversation.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from velollm.proxy.relayed_responses import RelayedResponses
from velollm.router.backend import Backend
from velollm.wire.errors import Api, APIError, error_response

BACKEND_HEADER = "x-velollm-backend"  # the remote backend that answered

# (name, URL) a response was stored by, when no configured backend has either now
Gone = tuple[str, str]


class ResponseHolders:
    """The backends that hold the responses relayed through the router."""

    def __init__(self, relayed: RelayedResponses, backends: list[Backend]) -> None:
        self.relayed = relayed
        self.backends = backends

    def find(self, response_id: Any) -> Backend | Gone | None:
        """The backend that stored `response_id`: the one of its name at its URL, else one at its URL (renamed; an
        admitted one first: names swapped in the configuration leave the old name on another server), else the one of
        its name (moved); (name, URL) it was stored by when no backend has either now; None for an id none stored."""
        where = self.relayed.where(response_id)
        if where is None:
            return None
        name, url = where
        named = next((b for b in self.backends if b.name == name), None)
        if named is not None and (not url or named.url == url):
            return named
        at_url = [b for b in self.backends if url and b.url == url]
        return next((b for b in at_url if b.admitted), at_url[0] if at_url else named or where)

    def describe(self, response_id: object) -> str | None:
        """"backend <name> (<url>)" when a replica's own Responses API stored `response_id` (created through here)."""
        backend = self.find(response_id)
        if isinstance(backend, tuple):
            return f"backend {backend[0]!r} ({backend[1] or 'its url unknown'}, no longer configured)"
        return f"backend {backend.name!r} ({backend.url})" if backend is not None else None

    async def relay(self, request: Request, response_id: str) -> Response | None:
        """A lookup of a response a replica stored (GET, its input_items, DELETE), answered by that replica; None
        for an id none stored. That replica ejected or no longer configured: a 502 that says so."""
        backend = self.find(response_id)
        if backend is None:
            return None
        if isinstance(backend, tuple):
            return self.gone("openai", backend, response_id)
        if not backend.admitted:
            return self.down("openai", backend, response_id)
        answer = await backend.gateway.relay_lookup(request, response_id)
        answer.headers[BACKEND_HEADER] = backend.name
        return answer

    @staticmethod
    def down(api: Api, backend: Backend, response_id: str) -> Response:
        """The 502 for a response whose replica is ejected: a 404 would tell the client that the response and its
        conversation are gone, when they come back with the replica (the openai SDK retries a 502)."""
        why = f" ({backend.health.reason})" if backend.health.reason else ""
        return error_response(api, APIError(502, f"response {response_id!r} is stored by backend {backend.name!r} "
                                                 f"({backend.url}), which cannot take requests now{why}; no other "
                                                 "backend holds it", type="server_error", code="backend_unavailable"))

    @staticmethod
    def gone(api: Api, where: Gone, response_id: str) -> Response:
        """The 502 for a response whose replica the configuration no longer has (removed, or renamed and moved). Not
        a 404, OpenAI's for an id it does not know: this one is known and likely still stored there, and a 404 tells
        clients to drop the conversation, which comes back when the replica is configured again."""
        name, url = where
        at = f" ({url})" if url else ""
        return error_response(api, APIError(502, f"response {response_id!r} is stored by backend {name!r}{at}, which "
                                                 "this router's configuration no longer has (no backend of that name "
                                                 "or url); configure it again to reach the response",
                                            type="server_error", code="backend_not_configured"))
