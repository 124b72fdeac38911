"""Stream framing: SSE for OpenAI routes (as the openai SDK parses it), NDJSON for Ollama routes."""

from __future__ import annotations

import json
from typing import Any

SSE_MEDIA_TYPE = "text/event-stream"
NDJSON_MEDIA_TYPE = "application/x-ndjson"
SSE_DONE = b"data: [DONE]\n\n"
# Proxies (nginx) buffer event streams unless told not to; clients need each chunk as it is made.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def dumps(obj: Any) -> str:
    """Compact JSON, non-ASCII kept as is (what Ollama and OpenAI servers send)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def dumps_bytes(obj: Any) -> bytes:
    return dumps(obj).encode()


def sse_event(obj: Any) -> bytes:
    """One SSE event: `data: <json>` and a blank line (no `event:` field: the SDK treats those specially)."""
    return b"data: " + dumps_bytes(obj) + b"\n\n"


def sse_data(event: bytes) -> bytes:
    """The data of one SSE event (the lines between two blank ones): the values of its `data:` lines, joined
    by newlines as the SSE spec joins them, each stripped (these payloads are JSON or [DONE]); b"" when none."""
    return b"\n".join(line[5:].strip() for line in event.splitlines() if line.startswith(b"data:"))


def ndjson_line(obj: Any) -> bytes:
    """One NDJSON line; never a blank line (the ollama client json-parses every line)."""
    return dumps_bytes(obj) + b"\n"
