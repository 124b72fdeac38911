"""SSE framing: the events VeloLLM writes, and the data read back out of one event."""

from __future__ import annotations

import json

from velollm.wire.framing import SSE_DONE, sse_data, sse_event


def test_sse_data_reads_back_what_sse_event_writes():
    chunk = {"id": "chatcmpl-1", "choices": [{"delta": {"content": "é\n"}}]}
    assert json.loads(sse_data(sse_event(chunk).strip())) == chunk
    assert sse_data(SSE_DONE) == b"[DONE]"


def test_sse_data_joins_data_lines_and_skips_other_fields():
    assert sse_data(b'event: x\r\ndata: {"a":\r\n: a comment\ndata:  1}  \nid: 7') == b'{"a":\n1}'
    assert sse_data(b"event: ping\nid: 3") == b""
    assert sse_data(b"data: [DONE] ") == b"[DONE]"
