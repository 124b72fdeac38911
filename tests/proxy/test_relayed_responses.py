"""RelayedResponses: the ids it learns from passed-through creates (whole, streamed), and its bounds."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from starlette.responses import JSONResponse, StreamingResponse

import velollm.proxy.relayed_responses
from tests.wall_clock import wall_clock
from velollm.proxy.relayed_responses import SNIFF_BYTES, RelayedResponses


def _stream(*chunks: bytes, media_type: str = "text/event-stream") -> StreamingResponse:
    async def body():
        for chunk in chunks:
            yield chunk

    return StreamingResponse(body(), media_type=media_type)


def _drain(answer: StreamingResponse) -> bytes:
    async def read() -> bytes:
        return b"".join([c async for c in answer.body_iterator])

    return asyncio.run(read())


def _event(data: dict) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


def test_a_whole_answer_is_learned_unless_not_stored():
    relayed = RelayedResponses()
    relayed.learn(JSONResponse({"id": "resp_a", "object": "response", "store": True}), "a")
    relayed.learn(JSONResponse({"id": "resp_b", "object": "response", "store": False}), "a")
    relayed.learn(JSONResponse(["not", "a", "response"]), "a")
    assert relayed.holder("resp_a") == "a" and relayed.holder("resp_b") is None and len(relayed) == 1
    assert relayed.holder(None) is None and relayed.holder(["resp_a"]) is None  # a client's odd previous_response_id


def test_a_stream_is_learned_from_response_created_as_it_passes():
    relayed = RelayedResponses()
    created = _event({"type": "response.created", "response": {"id": "resp_s", "store": True}})
    answer = relayed.learn(_stream(b": keep-alive\n\n", created[:10], created[10:] + _event({"type": "x"})), "b")
    assert relayed.holder("resp_s") is None  # not before its event went by
    body = _drain(answer)
    assert body == b": keep-alive\n\n" + created + _event({"type": "x"}) and relayed.holder("resp_s") == "b"


@pytest.mark.parametrize("first", [_event({"type": "error", "message": "no"}), b"data: {broken\n\n",
                                   _event({"type": "response.created", "response": {"id": "r", "store": False}})])
def test_a_stream_that_starts_otherwise_is_not_learned(first):
    relayed = RelayedResponses()
    later = _event({"type": "response.created", "response": {"id": "resp_late"}})
    _drain(relayed.learn(_stream(first, later), "b"))
    assert len(relayed) == 0


def test_a_stream_without_an_event_in_its_first_megabyte_is_given_up():
    relayed = RelayedResponses()
    created = _event({"type": "response.created", "response": {"id": "resp_late"}})
    _drain(relayed.learn(_stream(b"data: " + b"x" * SNIFF_BYTES, b"\n\n", created), "b"))
    assert len(relayed) == 0


def test_a_large_whole_answer_relayed_as_a_stream_is_learned_by_its_head():
    relayed = RelayedResponses()
    _drain(relayed.learn(_stream(b'{"id": "resp_big", "output": [', b"]}", media_type="application/json"), "c"))
    assert relayed.holder("resp_big") == "c"


def test_bounded_by_count_and_age(monkeypatch):
    clock = wall_clock(monkeypatch, velollm.proxy.relayed_responses)
    relayed = RelayedResponses(max_responses=2, max_age_s=0.05)
    for i in range(3):
        relayed.remember(f"resp_{i}", "a")
    assert [relayed.holder(f"resp_{i}") for i in range(3)] == [None, "a", "a"]  # the oldest goes first
    clock.advance(0.1)
    assert relayed.holder("resp_2") is None and len(relayed) == 1  # an old one goes when it is asked for
    relayed.remember("resp_3", "b")  # and those never asked for, when another comes
    assert len(relayed) == 1 and relayed.holder("resp_3") == "b"
    relayed.forget("resp_3")
    assert len(relayed) == 0
    with pytest.raises(ValueError):
        RelayedResponses(max_responses=0)


def test_kept_on_disk_across_a_restart(tmp_path):
    path = str(tmp_path / "cache" / "relayed_responses.sqlite")
    relayed = RelayedResponses(max_responses=3, path=path)
    assert relayed.holder("resp_x") is None and not (tmp_path / "cache").exists()  # no file until one is learned
    for i in range(4):
        relayed.remember(f"resp_{i}", "a" if i % 2 else "b")
    relayed.forget("resp_2")
    relayed.close()
    again = RelayedResponses(max_responses=3, path=path)
    assert [again.holder(f"resp_{i}") for i in range(4)] == [None, "a", None, "a"]  # the count's and forget's drops
    again.close()
    fewer = RelayedResponses(max_responses=1, path=path)  # a lowered cap applies to what the file holds
    assert [fewer.holder(f"resp_{i}") for i in range(4)] == [None, None, None, "a"]
    fewer.close()
    time.sleep(0.1)
    old = RelayedResponses(max_age_s=0.05, path=path)
    assert old.holder("resp_3") is None and len(old) == 0
    old.close()


def test_the_holder_url_is_kept_and_an_older_file_read(tmp_path):
    """Each id's holder URL is kept beside its name (a router follows a renamed backend by it); a file written before
    the url column is read, its rows with no URL, and takes new rows with theirs."""
    import sqlite3

    path = str(tmp_path / "relayed_responses.sqlite")
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE relayed (id TEXT PRIMARY KEY, holder TEXT NOT NULL, at REAL NOT NULL)")
        db.execute("INSERT INTO relayed VALUES ('resp_old', 'a', ?)", (time.time(),))
    db.close()
    relayed = RelayedResponses(path=path)
    assert relayed.where("resp_old") == ("a", "")
    relayed.remember("resp_new", "b", "http://127.0.0.1:2")
    relayed.close()
    again = RelayedResponses(path=path)
    assert again.where("resp_old") == ("a", "") and again.where("resp_new") == ("b", "http://127.0.0.1:2")
    assert again.holder("resp_new") == "b" and again.where("resp_none") is None
    again.close()


def test_a_file_that_cannot_be_made_leaves_the_map_in_memory(tmp_path, caplog):
    (tmp_path / "file").write_text("")
    relayed = RelayedResponses(path=str(tmp_path / "file" / "relayed_responses.sqlite"))  # a file where a folder goes
    relayed.remember("resp_a", "a")
    relayed.remember("resp_b", "a")
    assert relayed.holder("resp_a") == "a" and relayed.holder("resp_b") == "a"
    assert sum("kept in memory only" in r.message for r in caplog.records) == 1


def test_a_gateway_holds_only_what_its_own_upstream_stored(tmp_path):
    """Kept on disk, an id learned from another --upstream before a restart is not this upstream's to answer."""
    from velollm.proxy.gateway import UpstreamGateway
    from velollm.proxy.upstream import UpstreamConfig

    relayed = RelayedResponses()
    relayed.remember("resp_mine", "http://127.0.0.1:1")
    relayed.remember("resp_other", "http://127.0.0.1:2")
    gateway = UpstreamGateway(UpstreamConfig(url="http://127.0.0.1:1/"), relayed=relayed)
    assert gateway.response_holder("resp_mine") == "upstream http://127.0.0.1:1"
    assert gateway.response_holder("resp_other") is None and gateway.response_holder("resp_none") is None
    asyncio.run(gateway.aclose())


def test_a_late_first_event_in_small_chunks_is_read_in_linear_time():
    """A response.created of almost SNIFF_BYTES (long instructions and tools) in 64-byte chunks: each chunk's bytes
    are scanned once. The head read so far was split again for each chunk, 16,000 times up to a megabyte: seconds
    of the event loop for one stream (71 s on this test's machine), where once takes 0.2 s."""
    relayed = RelayedResponses()
    created = _event({"type": "response.created", "response": {"id": "resp_long", "instructions": "x" * (SNIFF_BYTES - 200)}})
    chunks = [created[i:i + 64] for i in range(0, len(created), 64)]
    answer = relayed.learn(_stream(b": keep-alive\r\n\r\n", *chunks, _event({"type": "x"})), "b")
    started = time.perf_counter()
    body = _drain(answer)
    elapsed = time.perf_counter() - started
    assert body.endswith(_event({"type": "x"})) and relayed.holder("resp_long") == "b"
    assert elapsed < 5.0, elapsed


def test_crlf_cut_between_chunks_ends_an_event():
    relayed = RelayedResponses()
    created = _event({"type": "response.created", "response": {"id": "resp_crlf"}}).replace(b"\n", b"\r\n")
    _drain(relayed.learn(_stream(created[:-3], created[-3:-1], created[-1:]), "b"))
    assert relayed.holder("resp_crlf") == "b"
