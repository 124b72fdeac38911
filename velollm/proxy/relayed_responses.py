"""RelayedResponses: which upstream holds each response created through it (response id -> holder, and its URL).

A /v1/responses create passed through to an upstream with its own Responses API (vLLM, OpenAI, a router's
`kind = "velollm"` replica) is stored there, not in this process's ResponseStore: GET /v1/responses/{id},
its input_items, DELETE and a `previous_response_id` naming it must go to the server that stored it. The id
is learned from the create's answer as it passes (a whole body's `id`, a stream's `response.created` event);
one the answer says is not stored (`store: false`) is not remembered. Bounded as the local store is (its
`--responses-max` count and 30-day age): the oldest id is forgotten first, and a forgotten id is this
process's 404, as an evicted local response is. With a `path` the map is kept on disk too (relayed_file.py),
so that it outlives a restart as the local store does.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response, StreamingResponse

from velollm.proxy.relayed_file import RelayedFile
from velollm.wire.framing import sse_data

logger = logging.getLogger(__name__)

DEFAULT_MAX_RESPONSES = 10_000  # the local store's default --responses-max
DEFAULT_MAX_AGE_S = 30 * 86400.0  # and its age limit
# A stream's first event (response.created: the response's shell, with its instructions and tools) is looked for
# in at most this many bytes; a whole answer relayed as a stream (over forward.VALIDATED_BYTES) by its head.
SNIFF_BYTES = 1 << 20
_HEAD_ID = re.compile(rb'^\s*\{\s*"id"\s*:\s*"([^"\\]{1,256})"')


class RelayedResponses:
    """Response id -> the name of the upstream that stored it (a router's backend name, a proxy's URL) and its URL
    (a router follows a backend renamed in its configuration by the URL: velollm/router/response_holders.py)."""

    def __init__(self, max_responses: int = DEFAULT_MAX_RESPONSES, max_age_s: float = DEFAULT_MAX_AGE_S,
                 path: str | None = None) -> None:
        if max_responses < 1 or max_age_s <= 0:
            raise ValueError("max_responses must be >= 1 and max_age_s positive")
        self.max_responses = max_responses
        self.max_age_s = max_age_s
        # id -> (holder, url, wall time), oldest first
        self._held: OrderedDict[str, tuple[str, str, float]] = OrderedDict()
        self._file = RelayedFile(path) if path else None
        self._loaded = self._file is None  # the file is read on first use

    def __len__(self) -> int:
        return len(self._load())

    def _load(self) -> OrderedDict[str, tuple[str, str, float]]:
        if not self._loaded and self._file is not None:
            self._loaded = True
            for response_id, holder, url, at in self._file.load(time.time() - self.max_age_s, self.max_responses):
                self._held[response_id] = (holder, url, at)
        return self._held

    def remember(self, response_id: str, holder: str, url: str = "") -> None:
        held, now = self._load(), time.time()
        held[response_id] = (holder, url, now)
        held.move_to_end(response_id)
        dropped = []  # oldest first: those over the count, then those over the age (never asked for since)
        while len(held) > self.max_responses or now - next(iter(held.values()))[2] > self.max_age_s:
            dropped.append(held.popitem(last=False)[0])
        if self._file is not None:
            self._file.put(response_id, holder, url, now, dropped)

    def holder(self, response_id: Any) -> str | None:
        """Who stored `response_id` (None: not a response relayed here, or one forgotten for age or count)."""
        where = self.where(response_id)
        return where[0] if where is not None else None

    def where(self, response_id: Any) -> tuple[str, str] | None:
        """(who stored `response_id`, its URL: "" when learned before URLs were kept), or None as for `holder`."""
        if not isinstance(response_id, str):
            return None
        held = self._load().get(response_id)
        if held is None:
            return None
        if time.time() - held[2] > self.max_age_s:
            self.forget(response_id)
            return None
        return held[0], held[1]

    def forget(self, response_id: str) -> None:
        if self._load().pop(response_id, None) is not None and self._file is not None:
            self._file.drop([response_id])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def learn(self, answer: Response, holder: str, url: str = "") -> Response:
        """`answer` (a create's 200, passed through) as it goes to the client; its response id is remembered
        for `holder` (at `url`) at once (a whole body) or when the stream's response.created event passes."""
        where = (holder, url)
        if isinstance(answer, StreamingResponse):
            sse = (answer.media_type or answer.headers.get("content-type", "")).startswith("text/event-stream")
            answer.body_iterator = self._sniffed(answer.body_iterator, where, sse)
            return answer
        try:
            self._take(json.loads(bytes(answer.body)), where)
        except (ValueError, TypeError):
            logger.debug("a relayed Responses answer was no JSON object: its id is not remembered")
        return answer

    def _take(self, response: Any, where: tuple[str, str]) -> bool:
        """Remembers the id of a Response object (unless it says store: false); whether it was one."""
        if not isinstance(response, dict) or not isinstance(response.get("id"), str):
            return False
        if response.get("store") is not False:
            self.remember(response["id"], *where)
        return True

    async def _sniffed(self, chunks: AsyncIterator[Any], holder: tuple[str, str], sse: bool) -> AsyncIterator[Any]:
        events = _EventHead() if sse else None
        head = b""  # a whole answer's first bytes
        looking = True
        try:
            async for chunk in chunks:
                if looking:
                    data = chunk if isinstance(chunk, bytes) else str(chunk).encode()
                    if events is not None:
                        looking = self._looking_for_event(events, data, holder)
                    else:
                        head += data
                        looking = self._looking_in_whole(head, holder)
                yield chunk
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    def _looking_in_whole(self, head: bytes, holder: tuple[str, str]) -> bool:
        """Whether the id is still to be found in the first `head` bytes of a whole Response object relayed as it
        came: "id" is its first key (OpenAI's, VeloLLM's)."""
        found = _HEAD_ID.match(head)
        if found is not None:
            self._take({"id": found.group(1).decode()}, holder)
        return found is None and len(head) < 512

    def _looking_for_event(self, head: _EventHead, data: bytes, holder: tuple[str, str]) -> bool:
        """Whether the id is still to be found in the stream, once `data`, its next bytes, went by."""
        for event in head.feed(data):
            payload = sse_data(event)
            if not payload:  # a comment (a keep-alive): no event
                continue
            try:  # the first event decides: response.created, or an error (nothing was stored)
                event_data = json.loads(payload)
            except ValueError:
                return False
            if isinstance(event_data, dict) and event_data.get("type") == "response.created":
                self._take(event_data.get("response"), holder)
            return False
        return head.size < SNIFF_BYTES


class _EventHead:
    """The events that begin an SSE stream, cut from its chunks as they come. Each byte is scanned once: a first event
    that comes late or in many small chunks (up to SNIFF_BYTES) costs its length, not its length squared."""

    def __init__(self) -> None:
        self.size = 0  # bytes fed
        self._pending = bytearray()  # after the last complete event, "\r\n" read as "\n"
        self._cr = False  # the last chunk ended in "\r" (a "\r\n" may be cut in two)

    def feed(self, data: bytes) -> list[bytes]:
        """The events that `data` completes, each without the blank line that ends it."""
        self.size += len(data)
        if self._cr:
            data = b"\r" + data
        self._cr = data.endswith(b"\r")
        start = max(len(self._pending) - 1, 0)  # a "\n" the last chunk ended with may begin the boundary
        self._pending += (data[:-1] if self._cr else data).replace(b"\r\n", b"\n")
        events = []
        while (end := self._pending.find(b"\n\n", start)) != -1:
            events.append(bytes(self._pending[:end]))
            del self._pending[:end + 2]
            start = 0
        return events
