"""GET / for browsers: a status page (static/status.html + status.js) that reads /metrics, /api/ps,
/health and /status/upstream and redraws itself. Everything else asking for / (Ollama clients, curl,
load balancers) keeps getting Ollama's "Ollama is running"."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from velollm.api.handler import AppState

STATIC = Path(__file__).resolve().parent / "static"
_NO_CACHE = {"Cache-Control": "no-cache"}


def wants_html(accept: str) -> bool:
    """True when the Accept header names text/html (browsers do; Ollama's clients and curl do not)."""
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() == "text/html":
            return not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params)
    return False


async def root(request: Request) -> Response:
    if wants_html(request.headers.get("accept", "")):
        return HTMLResponse((STATIC / "status.html").read_text(), headers={**_NO_CACHE, "Vary": "Accept"})
    return PlainTextResponse("Ollama is running", headers={"Vary": "Accept"})


async def script(request: Request) -> Response:
    return Response((STATIC / "status.js").read_text(), media_type="text/javascript", headers=_NO_CACHE)


async def upstream(request: Request) -> Response:
    """The upstream's health, probed now (null when the server has none)."""
    state: AppState = request.app.state.velollm
    gateway = state.models.upstream
    health = getattr(gateway, "health", None)
    return JSONResponse({"upstream": await health() if health is not None else None,
                         "proxy_only": state.config.proxy_only})


def routes() -> list[Route]:
    return [Route("/", root, methods=["GET", "HEAD"]), Route("/status.js", script, methods=["GET"]),
            Route("/status/upstream", upstream, methods=["GET"])]
