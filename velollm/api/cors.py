"""CORS as Ollama answers it: Starlette's CORSMiddleware, but an accepted preflight is a 204 No Content.

Ollama (gin-contrib/cors) ends an accepted preflight with 204 and no body, on /api and /v1 alike;
browsers take any 2xx as an accepted preflight (the Fetch standard's "ok status"), so the status only
matters to clients and proxies that compare it with Ollama's. A refused preflight keeps Starlette's 400
(a disallowed origin never gets here: OriginCheckMiddleware answers 403 first, as Ollama does).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

_BODY_HEADERS = frozenset({"content-length", "content-type"})


class PreflightCORSMiddleware(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 200:
            return response
        headers = {k: v for k, v in response.headers.items() if k not in _BODY_HEADERS}
        return Response(status_code=204, headers=headers)
