"""HeaderDeadline: uvicorn's HTTP/1.1 protocols with a deadline on reading a request's line and headers.

uvicorn times nothing out before a request's headers are complete: a client that connects and sends
nothing, or sends its headers a byte at a time (slowloris), holds a socket, a descriptor and a protocol
object forever (uvicorn's keep-alive timeout runs only between requests, and any byte stops it). Here a
connection gets `header_timeout_s` from its accept, and again from the end of each response, to deliver a
complete request line and headers. Bytes do not extend it. Past it the connection is closed without an
answer, as nginx (`client_header_timeout`) and Go's net/http (`ReadHeaderTimeout`, so Ollama) do: a
keep-alive connection the client meant to reuse sees a clean close, which HTTP clients retry on a new
connection, where an unsolicited 408 could be read as the answer to a request sent at that moment.

The deadline never runs while a request is being served: neither a body (BodyLimitMiddleware has its own
idle deadline, api/blobs.py its own) nor a response (a stream runs as long as it runs) is cut by it.

httptools (which uvicorn picks when installed, as `velollm serve` installs it) keeps no limit on header
bytes, h11 stops at 16 KiB, and both answered uvicorn's plain-text 400 to a URL over 64 KiB. Here both refuse
a request line or head over the limits of velollm/api/head_limit.py with a JSON 414 or 431 in the wire
format of the request's path, and close the connection; uvicorn's "Invalid HTTP request received." warning,
which it logs at every parse error before its 400, is not logged for these (RefusalQuietLogger): they are
answered, not invalid. A request that is malformed otherwise keeps uvicorn's 400 and its warning.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from velollm.api.head_limit import (
    CLOSE_REASONS,
    MAX_HEADER_BYTES,
    MAX_TARGET_BYTES,
    LimitedH11Connection,
    head_status,
    header_bytes,
    refusal,
)

logger = logging.getLogger(__name__)

# A refused head's connection is closed this long after the answer, what the client still sends read and
# dropped meanwhile (nginx's lingering close): closed at once with its bytes unread, the kernel answers them
# with a reset, which can destroy the answer before the client reads it.
LINGER_S = 2.0


INVALID_REQUEST = "Invalid HTTP request received."  # uvicorn's warning at a parse error (h11_impl, httptools_impl)


class RefusalQuietLogger:
    """uvicorn's "uvicorn.error" logger for one connection, without its INVALID_REQUEST warning where the
    parse error was a head the protocol refuses itself (`refusing()`); everything else goes to the logger."""

    def __init__(self, logger: logging.Logger, refusing: Callable[[], bool]) -> None:
        self._logger = logger
        self._refusing = refusing

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if msg == INVALID_REQUEST and self._refusing():
            return  # answered with a JSON 414/431 (HeaderDeadline._refuse, which logs it at debug)
        self._logger.warning(msg, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)


class HeaderDeadline:
    """Mixin for a uvicorn HTTP protocol class: the timer of one connection, armed while it serves no request
    (before the first one's headers are complete, and from the end of each response until the next one's are)."""

    header_timeout_s: float = 30.0
    # called with "idle" (nothing sent since the wait began), "header_timeout" (part of a request),
    # "request_line_too_long" (414) or "headers_too_large" (431) for each connection closed here (/metrics)
    on_close: Callable[[str], None] = staticmethod(lambda reason: None)
    cycle: Any
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop

    _header_timer: asyncio.TimerHandle | None = None
    _sent_in_wait = False  # bytes arrived since the timer was armed
    _lingering = False  # a head was refused: what comes is dropped until the close (LINGER_S)
    logger: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.logger = RefusalQuietLogger(self.logger, self._refusing_head)

    def _refusing_head(self) -> bool:
        """Whether the parse error at hand is a head over the limits, which _refuse answers."""
        raise NotImplementedError

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._sync_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        super().data_received(data)  # type: ignore[misc]
        self._sent_in_wait = True
        self._sync_header_timer()

    def timeout_keep_alive_handler(self) -> None:
        """uvicorn's keep-alive timer (armed for as long as this deadline, and stopped by any byte): this
        deadline closes the connection instead, counted."""

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._sync_header_timer()

    def _serving(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def shutdown(self) -> None:
        if self._lingering:  # no request: nothing to finish (and h11's state is an error)
            self.transport.close()
        else:
            super().shutdown()  # type: ignore[misc]

    def _sync_header_timer(self) -> None:
        if self._serving() or self._lingering or self.transport.is_closing():
            self._stop_header_timer()
        elif self._header_timer is None:  # armed once per wait: bytes do not push it back
            self._sent_in_wait = False
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        # a WebSocket upgrade swaps the protocol: the connection is no longer ours to time out
        if self._serving() or self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        logger.debug("closing a connection that sent no complete request headers in %g s", self.header_timeout_s)
        self.transport.close()
        self.on_close("header_timeout" if self._sent_in_wait else "idle")

    def _refuse(self, status: int, target: bytes) -> None:
        """The head refused (head_limit.refusal) and the connection closed, lingering (LINGER_S); once (httptools'
        byte count can pass the limit in the read whose parser callback refused it: a second answer would be
        written after the first's write_eof, asyncio's "Fatal error on transport" and its traceback)."""
        if self._lingering:
            return
        logger.debug("refusing a request head over the limits: %d", status)
        self._lingering = True
        self._stop_header_timer()
        self.transport.write(refusal(status, target))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)
        self.on_close(CLOSE_REASONS[status])


class H11HeaderDeadline(HeaderDeadline, H11Protocol):
    """uvicorn's h11 protocol with the header deadline and the head limits (head_limit.LimitedH11Connection)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = LimitedH11Connection()

    def _refusing_head(self) -> bool:
        return self.conn.refused is not None

    def send_400_response(self, msg: str) -> None:
        refused = self.conn.refused
        if refused is None:
            super().send_400_response(msg)
        else:
            self._refuse(*refused)


def _httptools_class() -> type | None:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return None

    class HttpToolsHeaderDeadline(HeaderDeadline, HttpToolsProtocol):
        """uvicorn's httptools protocol with the header deadline, and the head limits."""

        _header_bytes = 0  # bytes read while the headers were unfinished
        _fields_bytes = 0  # the parsed header fields' size (head_limit.header_bytes), for a head read whole
        _reading_headers = False
        _refusing: int | None = None  # the status of a head a parser callback stopped

        def _refusing_head(self) -> bool:
            return self._refusing is not None

        def on_message_begin(self) -> None:
            self._reading_headers = True
            self._header_bytes = self._fields_bytes = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            super().on_url(url)
            if len(self.url) > MAX_TARGET_BYTES:  # stops the parser: uvicorn's 400, answered by send_400_response
                self._refusing = 414
                raise ValueError("request target too long")

        def on_header(self, name: bytes, value: bytes) -> None:
            super().on_header(name, value)
            self._fields_bytes += header_bytes([(name, value)])
            if self._fields_bytes > MAX_HEADER_BYTES:  # however the head was read (one read of it all, too)
                self._refusing = 431
                raise ValueError("request headers too large")

        def send_400_response(self, msg: str) -> None:
            if self._refusing is not None:
                self._refuse(self._refusing, self.url)
            else:
                super().send_400_response(msg)

        def on_headers_complete(self) -> None:
            self._reading_headers = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            if self._lingering:
                return
            super().data_received(data)
            # A chunk that began a request and did not finish its headers counts whole (it may hold the tail of
            # a pipelined request's body: an overestimate of at most one read, far below the limit in practice).
            if self._reading_headers and self.parser is not None and not self.transport.is_closing():
                self._header_bytes += len(data)
                if self._header_bytes > MAX_HEADER_BYTES:
                    self._refuse(head_status(len(self.url), self._header_bytes), self.url)

    return HttpToolsHeaderDeadline


def header_deadline_protocol(header_timeout_s: float, impl: str = "auto",
                             on_close: Callable[[str], None] | None = None) -> type[asyncio.Protocol]:
    """The protocol class for uvicorn.Config(http=...): `impl` "auto" picks httptools when installed (as
    uvicorn's own "auto" does), else h11. `on_close(reason)` counts the connections it closes."""
    if header_timeout_s <= 0:
        raise ValueError(f"header timeout must be > 0 seconds, got {header_timeout_s:g}")
    base = _httptools_class() if impl in ("auto", "httptools") else None
    if impl == "httptools" and base is None:
        raise ValueError("httptools is not installed")
    if base is None and impl not in ("auto", "h11"):
        raise ValueError(f"unknown HTTP protocol {impl!r} (auto, h11, httptools)")
    base = base or H11HeaderDeadline
    attributes: dict[str, Any] = {"header_timeout_s": header_timeout_s}
    if on_close is not None:
        attributes["on_close"] = staticmethod(on_close)
    return type(base.__name__, (base,), attributes)
