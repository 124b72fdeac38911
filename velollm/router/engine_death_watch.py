"""EngineDeathWatch: whether a backend's stream ended because its engine died, read from the relayed bytes as they
pass (each chunk goes on to the client at once; nothing is held back, and of its bytes only a line it leaves
unfinished is kept).

An engine that dies while a stream runs cannot take back the 200 already sent, so VeloLLM ends the stream with an
error in the wire's own format, carrying the code engine_dead (velollm/wire/errors.py):

- /v1 chat and completions: `data: {"error": {..., "code": "engine_dead"}}`, then `data: [DONE]`;
- /v1/responses: `event: error` + `data: {"type": "error", "code": "engine_dead", ...}`, then `response.failed`;
- /api (NDJSON): `{"error": "...", "code": "engine_dead"}` (`ollama_stream_error`).

Only a line holding the bytes `engine_dead` is parsed, and it must be such an error at its top level (a tool
call's arguments or a model's text saying engine_dead are not). Lines longer than MAX_LINE_BYTES are not looked
at: an error line is short, and a long line (a whole `response.completed`) is never one.
"""

from __future__ import annotations

import json
from typing import Any

MAX_LINE_BYTES = 64 * 1024
CODE = "engine_dead"
_MARK = CODE.encode()


class EngineDeathWatch:
    """Fed a stream's chunks in order; `feed` is true for the chunk that ends the engine-dead error line.

    The lines a chunk holds whole are searched in place (for `engine_dead`, and only a line holding it is parsed);
    the only bytes kept are those of a line the chunk leaves unfinished (`held`, at most MAX_LINE_BYTES), whose
    start is needed if its rest holds the mark."""

    def __init__(self) -> None:
        self.died = False
        self._line = bytearray()  # the unfinished line's bytes so far
        self._too_long = False  # the unfinished line is over MAX_LINE_BYTES: not kept, not looked at

    @property
    def held(self) -> int:
        """Bytes kept between chunks: the start of the line the last chunk left unfinished."""
        return len(self._line)

    def feed(self, chunk: bytes) -> bool:
        if self.died:
            return False
        start = 0
        if self._line or self._too_long:  # the chunk begins with the rest of a line
            end = chunk.find(b"\n")
            self._take(chunk if end < 0 else chunk[:end])
            if end < 0:
                return False
            if self._line_ends():
                return True
            start = end + 1
        last = chunk.rfind(b"\n", start)
        if last >= 0 and self._whole_lines_say_dead(chunk, start, last):
            return True
        self._take(chunk[last + 1 if last >= 0 else start:])
        return False

    def finish(self) -> bool:
        """The stream ended: its last line, when it had no newline."""
        return not self.died and self._line_ends()

    def _whole_lines_say_dead(self, chunk: bytes, start: int, last: int) -> bool:
        """Whether a line of chunk[start:last] (lines ending in a newline each) is the engine-dead error."""
        mark = chunk.find(_MARK, start, last)
        while mark >= 0:
            line_start = chunk.rfind(b"\n", start, mark) + 1 or start
            line_end = chunk.find(b"\n", mark, last + 1)
            if line_end - line_start <= MAX_LINE_BYTES and says_engine_dead(chunk[line_start:line_end]):
                self.died = True
                return True
            mark = chunk.find(_MARK, line_end + 1, last)
        return False

    def _take(self, piece: bytes) -> None:
        if self._too_long or not piece:
            return
        if len(self._line) + len(piece) > MAX_LINE_BYTES:
            self._too_long = True
            self._line.clear()
        else:
            self._line += piece

    def _line_ends(self) -> bool:
        said = not self._too_long and _MARK in self._line and says_engine_dead(self._line)
        self._line.clear()
        self._too_long = False
        self.died = said  # False before: a watch that saw the death reads no more lines
        return said


def says_engine_dead(line: bytes | bytearray) -> bool:
    """Whether one line of an SSE or NDJSON stream is an error whose code is engine_dead."""
    text = line.strip()
    if text.startswith(b"data:"):
        text = text[5:].strip()
    try:
        obj: Any = json.loads(text)
    except ValueError:
        return False
    if not isinstance(obj, dict):
        return False
    if obj.get("type") == "error":  # the Responses API's error event
        return obj.get("code") == CODE
    error = obj.get("error")
    if isinstance(error, dict):  # OpenAI's error object
        return error.get("code") == CODE
    return isinstance(error, str) and obj.get("code") == CODE  # an Ollama error line with its code beside
