"""/api/pull through the router: the Ollama-speaking backends that serve the name (each in turn: the
model lands on every replica), else the first admitted Ollama backend. Their NDJSON progress is relayed
as it comes; a backend's `success` line is held back until the last one's, and the first error (an
`{"error"}` line, an error status, a broken connection) ends the pull."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from starlette.responses import Response, StreamingResponse

from velollm.proxy.upstream import UpstreamUnavailable
from velollm.wire.errors import error_message
from velollm.wire.framing import NDJSON_MEDIA_TYPE, ndjson_line
from velollm.wire.pull_answer import cannot_pull, progress_response, wants_stream

if TYPE_CHECKING:
    from velollm.router.backend import Backend


class PullFailed(Exception):
    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


def pull_targets(backends: Sequence[Backend], name: str) -> list[Backend] | str:
    """The backends a pull of `name` goes to, or why there is none."""
    ollama = [b for b in backends if b.upstream.known_kind == "ollama"]
    claimed = [b for b in ollama if b.serves(name)]
    if claimed:
        up = [b for b in claimed if b.admitted]
        return up or f"no backend that serves {name!r} is up ({', '.join(b.name for b in claimed)})"
    first = next((b for b in ollama if b.admitted), None)
    if first is None:
        return "no Ollama backend to pull through is up" if ollama else "no Ollama backend to pull through"
    return [first]


async def pull_through(backends: Sequence[Backend], name: str, body: dict[str, Any]) -> Response:
    targets = pull_targets(backends, name)
    if isinstance(targets, str):
        return cannot_pull(f"pull model manifest: {targets}", wants_stream(body))
    sent = {**body, "stream": True}  # progress is read as it comes, whatever the client asked
    headers = {"x-velollm-backend": ",".join(b.name for b in targets)}
    if not wants_stream(body):
        try:
            for b in targets:
                async for _ in _progress(b, sent):
                    pass
        except PullFailed as exc:
            response = progress_response([{"error": str(exc)}], False, exc.status)
        else:
            response = progress_response([{"status": "success"}], False)
        response.headers.update(headers)
        return response
    return StreamingResponse(_relayed(targets, sent), media_type=NDJSON_MEDIA_TYPE, headers=headers)


async def _relayed(targets: Sequence[Backend], body: dict[str, Any]) -> AsyncIterator[bytes]:
    try:
        for i, b in enumerate(targets):
            async for line in _progress(b, body):
                if line.get("status") == "success" and i < len(targets) - 1:
                    continue  # the next replica's progress follows; one success, at the end
                yield ndjson_line(line)
    except PullFailed as exc:
        yield ndjson_line({"error": str(exc)})


async def _progress(b: Backend, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """One backend's progress objects; PullFailed on its error (line, status or transport)."""
    try:
        response = await b.upstream.send("POST", "/api/pull", json_body=body)
    except UpstreamUnavailable as exc:
        raise PullFailed(f"backend {b.name}: {exc.reason}", 502) from exc
    try:
        if response.status_code != 200:
            text = (await b.upstream.read_body(response)).decode("utf-8", "replace")
            try:
                message = error_message(json.loads(text))
            except ValueError:
                message = text[:500] or f"status {response.status_code}"
            raise PullFailed(f"backend {b.name}: {message}", response.status_code)
        async for raw in b.upstream.iter_lines(response):
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and line.get("error"):
                raise PullFailed(f"backend {b.name}: {error_message(line)}")
            if isinstance(line, dict):
                yield line
    except UpstreamUnavailable as exc:
        raise PullFailed(f"backend {b.name}: {exc.reason}", 502) from exc
    finally:
        await response.aclose()
