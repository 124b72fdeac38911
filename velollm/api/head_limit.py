"""HeadLimit: the size limits on a request's line and headers, and the JSON refusal the protocol layer writes.

uvicorn answers a request it cannot parse with a plain-text 400 and no more. Here a request line or a head
that is too large gets an answer an API client can read, in the wire format of the path it was sent to
(`{"error": {...}}` on /v1, Ollama's `{"error": "..."}` elsewhere, velollm/wire/errors.py), written straight
to the transport (no app runs for it) and the connection closed:

- 414 for a request target over MAX_TARGET_BYTES (httptools' URL parser holds lengths in 16 bits: a longer
  one is its parse error, uvicorn's 400), or a head over MAX_HEADER_BYTES that is mostly its request line;
- 431 for a head (request line and headers) over MAX_HEADER_BYTES otherwise.

h11 keeps its own limit on an incomplete head (16 KiB by default); `LimitedH11Connection` raises it to
MAX_HEADER_BYTES, so both protocols refuse at the same size, and refuses a target over MAX_TARGET_BYTES or
a head over MAX_HEADER_BYTES that arrived whole in one read (which h11 parses at any length).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import h11

from velollm.wire.errors import APIError, api_of, error_body

MAX_HEADER_BYTES = 64 * 1024  # request line + headers
MAX_TARGET_BYTES = 64 * 1024 - 1  # the request target (URL): httptools parses no longer one
_REASONS = {414: b"URI Too Long", 431: b"Request Header Fields Too Large"}
_MESSAGES = {414: "the request line is over 64 KiB (its URL is too long)",
             431: "the request line and headers are over 64 KiB"}
_CODES = {414: "uri_too_long", 431: "headers_too_large"}
CLOSE_REASONS = {414: "request_line_too_long", 431: "headers_too_large"}  # HeaderDeadline.on_close's reason


def head_status(line_bytes: int, head_bytes: int) -> int:
    """414 when the request line is most of a head over the limit (a URL too long), else 431."""
    return 414 if 2 * line_bytes > head_bytes else 431


def header_bytes(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """Parsed header fields' size, each `name: value\\r\\n`: a head that arrived whole (in one read) is refused
    when they are over MAX_HEADER_BYTES, as its target is over MAX_TARGET_BYTES (a URL of the most the
    target may be, with a few short headers, runs however it arrives)."""
    return sum(len(name) + len(value) + 4 for name, value in headers)


def refusal(status: int, target: bytes) -> bytes:
    """The whole HTTP/1.1 response refusing a head: a JSON error in the wire format of `target`'s path (as
    much of the target as arrived; none: Ollama's), `connection: close`."""
    path = target.split(b"?", 1)[0].decode("latin-1")
    err = APIError(status, _MESSAGES[status], code=_CODES[status])
    body = json.dumps(error_body(api_of(path), err)).encode()
    headers = b"".join(b"%s: %s\r\n" % (k.lower().encode(), v.encode()) for k, v in err.headers.items())
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%sconnection: close\r\n\r\n"
            % (status, _REASONS[status], len(body), headers) + body)


class LimitedH11Connection(h11.Connection):
    """h11's server connection with the head limits; `refused` holds the status of the head it refused
    (uvicorn answers any h11.RemoteProtocolError with its 400: H11HeaderDeadline answers this one)."""

    refused: tuple[int, bytes] | None = None  # (status, the target or the start of the head)

    def __init__(self) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)

    def next_event(self):  # type: ignore[no-untyped-def]
        try:
            event = super().next_event()
        except h11.RemoteProtocolError:
            head, _ = self.trailing_data
            if len(head) > MAX_HEADER_BYTES:  # h11's "Receive buffer too long": an incomplete head
                line = head.split(b"\n", 1)[0]
                self.refused = (head_status(len(line), len(head)), _target(line))
            raise
        if isinstance(event, h11.Request) and len(event.target) > MAX_TARGET_BYTES:
            self.refused = (414, event.target)
            raise h11.RemoteProtocolError("request target too long", error_status_hint=414)
        # a head over the limit that arrived whole: h11 parses any size
        if isinstance(event, h11.Request) and header_bytes(event.headers.raw_items()) > MAX_HEADER_BYTES:
            self.refused = (431, event.target)
            raise h11.RemoteProtocolError("request headers too large", error_status_hint=431)
        return event


def _target(line: bytes) -> bytes:
    """The target of a request line, or what arrived of it ("GET /v1/models?q=..." -> "/v1/models?q=...")."""
    parts = line.split(b" ", 2)
    return parts[1] if len(parts) > 1 else b""
