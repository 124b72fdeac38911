"""An `error:` field in an OpenAI-compatible chat stream (llama.cpp's server), as OpenAI's error event.

llama.cpp's server ends a stream that fails mid-answer with `error: {"code": 500, "message": ..., "type": ...}`
and then `data: [DONE]`. SSE clients read `data:` only (the openai SDK, the proxy's own Responses conversion), so
the stream looked finished, an answer cut short with no error: the openai SDK's chat stream just stopped and the
Responses API answered `response.completed`. Relayed as `data: {"error": {...}}`, the SDK raises it and the
Responses stream ends with `error` and `response.failed`, as for any upstream whose stream breaks.
"""

from __future__ import annotations

import json
import re

from velollm.wire.errors import APIError, error_code, error_message, openai_error_body
from velollm.wire.framing import sse_data, sse_event

_EVENT_END = re.compile(rb"\r?\n\r?\n")
_MARK = b"error:"


def error_fields_as_data(messages: bytes) -> bytes:
    """Whole SSE events (as the relay hands them), each one of `error:` lines and no data rewritten as OpenAI's
    error event; the others, and bytes after the last event's end, as they came."""
    if _MARK not in messages:
        return messages
    out, start = [], 0
    for end in _EVENT_END.finditer(messages):
        event = _as_error_event(messages[start:end.start()])
        out.append(event if event is not None else messages[start:end.end()])
        start = end.end()
    out.append(messages[start:])
    return b"".join(out)


def _as_error_event(event: bytes) -> bytes | None:
    fields = [line[len(_MARK):].strip() for line in event.splitlines() if line.startswith(_MARK)]
    if not fields or sse_data(event):
        return None
    text = b"\n".join(fields).decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        body = text
    detail = body.get("error", body) if isinstance(body, dict) else None
    kind = detail.get("type") if isinstance(detail, dict) else None
    err = APIError(502, error_message(body), type=kind if isinstance(kind, str) and kind else None,
                   code=error_code(body))
    return sse_event(openai_error_body(err))
