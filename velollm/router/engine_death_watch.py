"""EngineDeathWatch: whether a backend's stream ended because its engine died, read from the relayed bytes as they
pass (each chunk goes on to the client at once; nothing is held back).

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
    """Fed a stream's chunks in order; `feed` is true for the chunk that ends the engine-dead error line."""

    def __init__(self) -> None:
        self.died = False
        self._line = bytearray()
        self._too_long = False

    def feed(self, chunk: bytes) -> bool:
        if self.died:
            return False
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            self._take(chunk[start:] if end < 0 else chunk[start:end])
            if end < 0:
                return False
            if self._line_ends():
                return True
            start = end + 1

    def finish(self) -> bool:
        """The stream ended: its last line, when it had no newline."""
        return not self.died and self._line_ends()

    def _take(self, piece: bytes) -> None:
        if self._too_long or not piece:
            return
        if len(self._line) + len(piece) > MAX_LINE_BYTES:
            self._too_long = True
            self._line.clear()
        else:
            self._line += piece

    def _line_ends(self) -> bool:
        line, too_long = bytes(self._line), self._too_long
        self._line.clear()
        self._too_long = False
        if too_long or _MARK not in line:
            return False
        self.died = says_engine_dead(line)
        return self.died


def says_engine_dead(line: bytes) -> bool:
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
