"""Errors -> HTTP status and wire format: `{"error": {message, type, param, code}}` on /v1,
`{"error": "..."}` on Ollama routes. The API and the proxy both answer through here."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Literal

from velollm.errors import (
    ContextOverflow,
    EngineDead,
    InvalidRequest,
    ModelLoadError,
    ModelNotFound,
    Overloaded,
    UnsupportedModel,
    VeloLLMError,
)

if TYPE_CHECKING:
    from starlette.responses import Response

logger = logging.getLogger(__name__)

Api = Literal["openai", "ollama"]
RETRY_AFTER_S = 1  # queue-full back-off hint; the openai SDK honours Retry-After
# The error's `code` as a header on both APIs: an Ollama error body has no code, and a router in front tells a
# dead engine (engine_dead: eject that replica) from a busy one (overloaded, shutting_down: keep it) by it.
ERROR_CODE_HEADER = "x-velollm-error"
# OpenAI's error `type` per status, for errors that carry no type of their own.
_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}


class APIError(Exception):
    """An HTTP-level error: status, message, and the OpenAI `type` / `param` / `code` fields."""

    def __init__(self, status: int, message: str, *, type: str | None = None,
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.param = param
        self.code = code
        self.headers = headers or {}
        if code:
            self.headers = {**self.headers, ERROR_CODE_HEADER: code}


def to_api_error(exc: BaseException) -> APIError:
    """Maps a typed VeloLLM error (or anything else) to status, OpenAI type and code."""
    if isinstance(exc, APIError):
        return exc
    message = str(exc) or type(exc).__name__
    if isinstance(exc, ContextOverflow):  # OpenAI's code for a prompt longer than the context
        return APIError(400, message, param=exc.param, code="context_length_exceeded")
    if isinstance(exc, InvalidRequest):
        return APIError(400, message, param=exc.param)
    if isinstance(exc, ModelNotFound):
        return APIError(404, message, code="model_not_found")
    if isinstance(exc, UnsupportedModel):
        return APIError(400, message, code="unsupported_model")
    if isinstance(exc, Overloaded):
        return APIError(503, message, type="server_error", code="overloaded",
                        headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, ModelLoadError):
        return APIError(500, message, type="server_error", code="model_load_error")
    if isinstance(exc, EngineDead):
        return APIError(503, message, type="server_error", code="engine_dead")
    status = getattr(exc, "status_code", None)
    if isinstance(exc, VeloLLMError) and isinstance(status, int) and 400 <= status < 600:
        # errors that know their status (the proxy's UpstreamUnavailable: 502, UpstreamTimeout: 504)
        return APIError(status, message, code=type(exc).__name__)
    logger.exception("internal error", exc_info=exc)
    return APIError(500, f"internal error: {message}", type="server_error")


def is_openai_path(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def api_of(path: str) -> Api:
    return "openai" if is_openai_path(path) else "ollama"


def openai_error_body(err: APIError) -> dict[str, Any]:
    return {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}


def ollama_error_body(err: APIError) -> dict[str, Any]:
    return {"error": err.message}


def ollama_stream_error(err: APIError) -> dict[str, Any]:
    """The line that ends an Ollama stream whose 200 already went out: Ollama's `{"error"}`, plus the code when
    there is one (engine_dead, shutting_down): the x-velollm-error header cannot say it any more, and a router in
    front ejects a backend whose engine died by it (velollm/router/engine_death_watch.py). Ollama's clients read
    only `error`."""
    return {"error": err.message, **({"code": err.code} if err.code else {})}


def error_body(api: Api, err: APIError) -> dict[str, Any]:
    return openai_error_body(err) if api == "openai" else ollama_error_body(err)


def error_response(api: Api, exc: BaseException) -> Response:
    """A JSON error response in `api`'s wire format (status, headers such as Retry-After)."""
    from starlette.responses import Response

    err = to_api_error(exc)
    body = json.dumps(error_body(api, err)).encode()
    return Response(body, status_code=err.status, headers=err.headers, media_type="application/json")


async def send_error(scope: dict, send: Any, err: APIError) -> None:
    """Writes an error response from raw ASGI middleware (before any app code ran)."""
    body = json.dumps(error_body(api_of(scope.get("path", "")), err)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error_message(body: Any) -> str:
    """The message of an upstream's error body, whatever its format (OpenAI, Ollama, FastAPI's detail)."""
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body))
        if isinstance(error, dict):
            return str(error.get("message") or error)
        return str(error)
    return str(body)


def error_code(body: Any) -> str | None:
    """The code of an upstream's error body: OpenAI's `error.code`, or the `code` beside an error line's message
    (a VeloLLM's NDJSON: engine_dead, shutting_down); None unless a non-empty string (llama.cpp's is the HTTP
    status, a number)."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    code = error.get("code") if isinstance(error, dict) else body.get("code")
    return code if isinstance(code, str) and code else None
