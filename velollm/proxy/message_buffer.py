"""MessageBuffer: whole NDJSON lines / SSE events out of an upstream stream's chunks, in linear time.

The bytes of a message that spans chunks are kept as a list of parts and joined once, when its end
arrives (a buffer grown by `pending + chunk` copies the whole pending message per chunk: one 64 MB
line in small chunks took the proxy 45 s). A message longer than `max_bytes` is an error, not memory.
"""

from __future__ import annotations

import re

from velollm.errors import VeloLLMError

NDJSON_BOUNDARIES = (b"\n",)
SSE_BOUNDARIES = (b"\n\n", b"\r\n\r\n")


class MessageTooLong(VeloLLMError):
    """One line / event of an upstream stream is longer than the proxy reassembles."""


class MessageBuffer:
    def __init__(self, boundaries: tuple[bytes, ...], max_bytes: int) -> None:
        self.boundaries = boundaries
        self.max_bytes = max_bytes
        self._parts: list[bytes] = []
        self._pending = 0  # bytes in _parts
        self._overlap = max(len(b) for b in boundaries) - 1  # a boundary may start in the previous part

    def feed(self, chunk: bytes) -> bytes:
        """The complete messages that `chunk` ends (possibly several, possibly none), boundaries included."""
        if not self._parts and chunk.endswith(self.boundaries):  # upstreams send whole messages per chunk
            return chunk
        window = self._parts[-1][-self._overlap:] if self._parts and self._overlap else b""
        probe = window + chunk if window else chunk
        cut = max(probe.rfind(b) + len(b) if b in probe else 0 for b in self.boundaries) - len(window)
        if cut <= 0:
            self._keep(chunk)
            return b""
        head, rest = chunk[:cut], chunk[cut:]
        if self._parts:
            head = b"".join([*self._parts, head])
            self._parts, self._pending = [], 0
        self._keep(rest)
        return head

    def tail(self) -> bytes:
        """What is left when the stream ends: an unterminated last message (or b"")."""
        out = b"".join(self._parts)
        self._parts, self._pending = [], 0
        return out

    def _keep(self, part: bytes) -> None:
        if not part:
            return
        self._pending += len(part)
        if self._pending > self.max_bytes:
            raise MessageTooLong(f"the upstream sent a line / event longer than {self.max_bytes} bytes "
                                 f"(--max-upstream-body)")
        self._parts.append(part)


# A blank or whitespace-only line, or a "\r\n" line end: what Ollama never writes.
_UNTIDY = re.compile(rb"(?m)^[ \t\r]*\n|\r\n")


def lines(data: bytes) -> list[bytes]:
    """The lines of `data` (whole NDJSON lines, or a stream's unterminated last one), stripped, blank ones left
    out: whitespace around a JSON value is nothing to its parser, and a blank line is no value."""
    return [text for line in data.split(b"\n") if (text := line.strip())]


def tidy_lines(data: bytes) -> bytes:
    """Whole NDJSON lines as Ollama writes them: no blank line, each ended by "\n". An upstream's blank line
    relayed as it came crashes the ollama library, whose json.loads('') raises mid-stream."""
    if not _UNTIDY.search(data):
        return data  # the usual case: relayed without a copy
    return b"".join(line + b"\n" for line in lines(data))
