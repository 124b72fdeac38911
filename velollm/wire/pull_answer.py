"""Ollama's /api/pull answers that VeloLLM gives itself (the API with no upstream, the router with no
Ollama backend, a model present here): the NDJSON progress stream (`stream` true, Ollama's default) or
the single final object.

Ollama answers a pull it cannot do (no registry, no such model) with a 200 stream that ends in an
`{"error"}` line, or, with `stream: false`, a 500 whose body is `{"error"}` (server/routes.go
waitForStream); the official clients raise ResponseError either way.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from velollm.wire.framing import NDJSON_MEDIA_TYPE, ndjson_line

PRESENT_STEPS = ("pulling manifest", "verifying sha256 digest", "writing manifest", "success")


def wants_stream(body: dict[str, Any]) -> bool:
    """Ollama's `stream` is a *bool: absent means streamed."""
    return body.get("stream") is not False


def progress_response(lines: list[dict[str, Any]], stream: bool, status: int = 200) -> Response:
    """`lines` as an NDJSON stream, or (stream false) the last one alone; an `{"error"}` object alone is a
    `status` (500 unless given) answer, as Ollama's."""
    if stream:
        return StreamingResponse(iter([ndjson_line(line) for line in lines]), media_type=NDJSON_MEDIA_TYPE)
    last = lines[-1]
    return JSONResponse(last, status_code=(status if status >= 400 else 500) if "error" in last else 200)


def present(stream: bool) -> Response:
    """A pull of a model that is already here: Ollama's steps for an up-to-date model, then success."""
    return progress_response([{"status": s} for s in PRESENT_STEPS], stream)


def cannot_pull(message: str, stream: bool, status: int = 500) -> Response:
    """A pull that cannot be done: `pulling manifest` then the error line, or (stream false) the error."""
    return progress_response([{"status": "pulling manifest"}, {"error": message}], stream, status)
