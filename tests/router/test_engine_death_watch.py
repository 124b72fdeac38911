"""EngineDeathWatch on the three wires' stream endings, cut anywhere between chunks; lines that merely mention
engine_dead (a tool call's arguments, text, another error's code) are not deaths."""

from __future__ import annotations

import json

import pytest

from velollm.responses.event_stream import sse_frame
from velollm.router.engine_death_watch import (
    MAX_LINE_BYTES,
    EngineDeathWatch,
    says_engine_dead,
)
from velollm.wire.errors import APIError, ollama_stream_error, openai_error_body
from velollm.wire.framing import SSE_DONE, ndjson_line, sse_event

DEAD = APIError(503, "the engine of 'demo' stopped", type="server_error", code="engine_dead")
BUSY = APIError(503, "the server is shutting down", code="shutting_down")
CHAT_CHUNK = sse_event({"choices": [{"index": 0, "delta": {"content": "hi"}}]})
OLLAMA_LINE = ndjson_line({"message": {"role": "assistant", "content": "hi"}, "done": False})

ENDINGS = {
    "openai": CHAT_CHUNK * 3 + sse_event(openai_error_body(DEAD)) + SSE_DONE,
    "ollama": OLLAMA_LINE * 3 + ndjson_line(ollama_stream_error(DEAD)),
    "responses": sse_frame({"type": "response.output_text.delta", "delta": "hi"})
    + sse_frame({"type": "error", "code": "engine_dead", "message": DEAD.message, "param": None})
    + sse_frame({"type": "response.failed", "response": {"error": {"code": "engine_dead", "message": "x"}}}),
}


def _fed(stream: bytes, cut: int) -> tuple[int, EngineDeathWatch]:
    watch = EngineDeathWatch()
    chunks = [stream[i:i + cut] for i in range(0, len(stream), cut)]
    hits = sum(watch.feed(c) for c in chunks) + watch.finish()
    return hits, watch


@pytest.mark.parametrize("wire", sorted(ENDINGS))
@pytest.mark.parametrize("cut", [1, 7, 64, 1 << 20])
def test_an_engine_dead_ending_is_seen_once_however_the_stream_is_cut(wire, cut):
    hits, watch = _fed(ENDINGS[wire], cut)
    assert hits == 1 and watch.died


def test_an_unterminated_last_line_is_read_at_the_end():
    watch = EngineDeathWatch()
    assert not watch.feed(OLLAMA_LINE + ndjson_line(ollama_stream_error(DEAD)).rstrip(b"\n"))
    assert watch.finish() and watch.died


@pytest.mark.parametrize("line", [
    ndjson_line({"message": {"tool_calls": [{"function": {"name": "f", "arguments": {"code": "engine_dead"}}}]}}),
    sse_event({"choices": [{"delta": {"content": '{"error": {"code": "engine_dead"}}'}}]}),
    sse_event(openai_error_body(BUSY)),
    ndjson_line(ollama_stream_error(BUSY)),
    ndjson_line({"error": "the engine_dead thing"}),  # an Ollama error line without the code: not VeloLLM's
    b"data: not json engine_dead\n\n",
])
def test_lines_that_only_mention_engine_dead_are_not_deaths(line):
    hits, watch = _fed(CHAT_CHUNK + line + SSE_DONE, 5)
    assert hits == 0 and not watch.died


def test_a_line_longer_than_the_limit_is_not_parsed_and_the_next_one_is():
    long_line = ndjson_line({"error": "x" * MAX_LINE_BYTES, "code": "engine_dead"})
    assert says_engine_dead(long_line)
    assert _fed(long_line, 4096)[0] == 0
    assert _fed(long_line + ndjson_line(ollama_stream_error(DEAD)), 4096)[0] == 1


def test_ollama_stream_error_adds_the_code_only_when_there_is_one():
    assert ollama_stream_error(DEAD) == {"error": DEAD.message, "code": "engine_dead"}
    assert ollama_stream_error(APIError(500, "boom")) == {"error": "boom"}
    assert json.loads(ndjson_line(ollama_stream_error(DEAD)))["code"] == "engine_dead"


def test_only_a_line_a_chunk_leaves_unfinished_is_held():
    """The relay keeps no copy of the lines it passes: a chunk's whole lines are searched in place, and only
    the start of a line cut between chunks is held (to be read whole if its rest says engine_dead)."""
    watch = EngineDeathWatch()
    assert not watch.feed(CHAT_CHUNK * 10_000) and watch.held == 0
    error = sse_event(openai_error_body(DEAD))
    assert not watch.feed(CHAT_CHUNK * 3 + error[:20]) and watch.held == 20
    assert watch.feed(error[20:] + SSE_DONE) and watch.died and watch.held == 0


def test_a_line_cut_over_the_limit_is_dropped_not_held():
    watch = EngineDeathWatch()
    assert not watch.feed(b"{" + b"x" * MAX_LINE_BYTES) and watch.held == 0
    assert not watch.feed(b'", "code": "engine_dead"}\n' + CHAT_CHUNK)
    assert watch.feed(ndjson_line(ollama_stream_error(DEAD)))  # the next line is read


def test_the_death_among_many_lines_of_one_chunk_is_seen():
    stream = CHAT_CHUNK * 500 + sse_event(openai_error_body(BUSY)) + sse_event(openai_error_body(DEAD)) + SSE_DONE
    assert _fed(stream, len(stream))[0] == 1
