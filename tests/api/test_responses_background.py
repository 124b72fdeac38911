"""Background responses (`background: true`) and POST /v1/responses/{id}/cancel through the official openai SDK, on
a stub engine that takes 5 ms a token (so that a response is still running when the test looks at it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.api.conftest import ServerHandle, ThreadedServer, free_port, stub_app
from tests.api.stub_engine import StubEngine

ASK = {"model": "demo", "input": "go on", "temperature": 0}
LONG = {"max_output_tokens": 200, "extra_body": {"ignore_eos": True}}  # a second at 5 ms a token
TERMINAL = ("completed", "incomplete", "failed", "cancelled")


@pytest.fixture(scope="module")
def slow() -> Iterator[ServerHandle]:
    engine = StubEngine(token_delay_s=0.005)
    port = free_port()
    with ThreadedServer(stub_app(engine, port=port), port):
        yield ServerHandle("stub", f"http://127.0.0.1:{port}", engine=engine)


@pytest.fixture
def client(slow) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{slow.url}/v1", api_key="x", max_retries=0, timeout=30)


def _until(client: openai.OpenAI, response_id: str, done=lambda r: r.status in TERMINAL, timeout: float = 20.0):
    """Polls the response until `done` says so; every state seen on the way."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(client.responses.retrieve(response_id))
        if done(seen[-1]):
            return seen
        time.sleep(0.02)
    raise AssertionError(f"{response_id}: still {seen[-1].status}")


def test_create_returns_queued_at_once_and_polls_to_the_answer(client, slow):
    created = client.responses.create(**ASK, background=True, **LONG)
    assert created.status == "queued" and created.background is True and created.output == []
    seen = _until(client, created.id)
    final = seen[-1]
    assert final.status == "incomplete" and final.background is True and len(final.output_text) == 200
    partial = [r.output_text for r in seen if r.status == "in_progress" and r.output]
    assert partial and all(final.output_text.startswith(text) for text in partial)  # progress, then the end
    assert final.output_text == client.responses.create(**ASK, **LONG).output_text  # the answer it would give


def test_a_background_stream_left_midway_runs_on_and_resumes_after_a_sequence_number(client, slow):
    aborted = slow.metric("velollm_aborted_requests_total", model="demo")
    with client.responses.create(**ASK, background=True, stream=True, **LONG) as stream:
        first = [event for _, event in zip(range(8), stream)]
    assert [e.type for e in first[:3]] == ["response.created", "response.queued", "response.in_progress"]
    assert first[0].response.status == "queued" and first[0].response.background is True
    response_id = first[0].response.id
    rest = list(client.responses.retrieve(response_id, stream=True, starting_after=first[-1].sequence_number))
    assert [e.sequence_number for e in first + rest] == list(range(len(first) + len(rest)))
    assert rest[-1].type == "response.incomplete"  # the client's leaving stopped nothing
    text = "".join(e.delta for e in first + rest if e.type == "response.output_text.delta")
    assert text == rest[-1].response.output_text == client.responses.retrieve(response_id).output_text
    again = list(client.responses.retrieve(response_id, stream=True))  # a finished run's events are kept a while
    assert [e.sequence_number for e in again] == list(range(len(first) + len(rest)))
    assert slow.metric("velollm_aborted_requests_total", model="demo") == aborted


def test_cancel_stops_the_run_and_frees_its_blocks(client, slow):
    aborted = slow.metric("velollm_aborted_requests_total", model="demo")
    created = client.responses.create(**ASK, background=True, max_output_tokens=2000,  # the context's end
                                      extra_body={"ignore_eos": True})
    running = _until(client, created.id, lambda r: len(r.output_text) >= 10)[-1]
    assert running.status == "in_progress"
    assert slow.metric("velollm_allocated_blocks", model="demo") > 0
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status == "cancelled" and cancelled.output_text.startswith(running.output_text)
    assert len(cancelled.output_text) < cancelled.max_output_tokens and cancelled.output[0].status == "incomplete"
    assert slow.wait_metric("velollm_allocated_blocks", lambda v: v == 0, model="demo") == 0
    assert slow.wait_metric("velollm_aborted_requests_total", lambda v: v > aborted, model="demo") == aborted + 1
    assert client.responses.retrieve(created.id).status == "cancelled"
    assert client.responses.cancel(created.id).model_dump() == cancelled.model_dump()  # twice: the same object
    assert client.responses.create(**ASK, max_output_tokens=5).status == "incomplete"  # the engine serves on


def test_the_background_responses_gauge_counts_the_runs_in_flight(client, slow):
    before = slow.metric("velollm_background_responses")
    created = [client.responses.create(**ASK, background=True, max_output_tokens=2000, extra_body={"ignore_eos": True})
               for _ in range(2)]
    assert slow.metric("velollm_background_responses") == before + 2  # queued or running, each
    client.responses.cancel(created[0].id)
    assert slow.metric("velollm_background_responses") == before + 1
    client.responses.cancel(created[1].id)
    assert slow.metric("velollm_background_responses") == before


def test_a_followed_stream_ends_when_the_run_is_cancelled(client, slow):
    """A cancel while the SDK follows the stream: it ends with `response.incomplete` holding the response, status
    cancelled, after the cut item's done events (the stream just ended, as a dropped connection ends)."""
    created = client.responses.create(**ASK, background=True, **LONG)
    _until(client, created.id, lambda r: r.status == "in_progress")
    events: list = []
    with client.responses.retrieve(created.id, stream=True) as followed:
        for event in followed:
            if event.type == "response.output_text.delta" and not any(e.type == event.type for e in events):
                client.responses.cancel(created.id)  # at its first text
            events.append(event)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in events[-3:]] == ["response.content_part.done", "response.output_item.done",
                                            "response.incomplete"]
    final = events[-1].response
    assert final.status == "cancelled" and final.output[0].status == events[-2].item.status == "incomplete"
    assert final.output_text == "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert final.model_dump() == client.responses.retrieve(created.id).model_dump()
    assert list(client.responses.retrieve(created.id, stream=True, starting_after=events[-1].sequence_number)) == []


def test_cancel_and_stream_errors(client, slow):
    with pytest.raises(openai.NotFoundError) as unknown:
        client.responses.cancel("resp_nope")
    assert unknown.value.body["message"] == "Response with id 'resp_nope' not found."
    plain = client.responses.create(**ASK, max_output_tokens=3)
    with pytest.raises(openai.BadRequestError) as not_background:
        client.responses.cancel(plain.id)
    assert "background=true" in not_background.value.body["message"]
    assert client.responses.retrieve(plain.id).status == "incomplete"  # untouched
    with pytest.raises(openai.BadRequestError) as unstored:
        client.responses.create(**ASK, background=True, store=False)
    assert unstored.value.body["param"] == "background" and unstored.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as stream_plain:
        list(client.responses.retrieve(plain.id, stream=True))
    assert stream_plain.value.body["param"] == "stream"
    answer = httpx.get(f"{slow.url}/v1/responses/{plain.id}", params={"stream": "true", "starting_after": "x"})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "starting_after"
    below = client.responses.create(**ASK, background=True, max_output_tokens=3)
    _until(client, below.id)
    with pytest.raises(openai.BadRequestError) as negative:
        list(client.responses.retrieve(below.id, stream=True, starting_after=-5))
    assert negative.value.body["param"] == "starting_after" and "no longer held" not in negative.value.body["message"]
    assert "sequence number" in negative.value.body["message"]
    again = list(client.responses.retrieve(below.id, stream=True, starting_after=-1))  # -1: every event
    assert again[0].sequence_number == 0 and again[-1].type == "response.incomplete"
    finished = client.responses.create(**ASK, background=True, max_output_tokens=3)
    ended = _until(client, finished.id)[-1]
    assert client.responses.cancel(finished.id).model_dump() == ended.model_dump()  # as it is


def test_a_running_response_is_not_continued(client, slow):
    created = client.responses.create(**ASK, background=True, **LONG)
    with pytest.raises(openai.BadRequestError) as running:
        client.responses.create(**ASK, previous_response_id=created.id)
    assert running.value.body["param"] == "previous_response_id"
    client.responses.cancel(created.id)
    assert client.responses.create(**ASK, previous_response_id=created.id, max_output_tokens=3).status == "incomplete"


def test_deleting_a_running_response_cancels_it(client, slow):
    created = client.responses.create(**ASK, background=True, **LONG)
    _until(client, created.id, lambda r: len(r.output_text) >= 5)
    client.responses.delete(created.id)
    time.sleep(0.3)  # when its run would have stored it again
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    assert slow.wait_metric("velollm_allocated_blocks", lambda v: v == 0, model="demo") == 0


def test_a_deleted_response_s_events_are_not_replayed(client, slow):
    """A finished background response deleted: its events (its output) are gone with it, as are GET and cancel."""
    created = client.responses.create(**ASK, background=True, max_output_tokens=5)
    _until(client, created.id)
    assert client.responses.delete(created.id) is None
    answer = httpx.get(f"{slow.url}/v1/responses/{created.id}", params={"stream": "true"})
    assert answer.status_code == 404, answer.text[:200]
    with pytest.raises(openai.NotFoundError):
        list(client.responses.retrieve(created.id, stream=True))
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel(created.id)


@pytest.mark.parametrize(("failures", "stored", "ending"), [(1, "incomplete", "incomplete"), (2, "failed", "failed"),
                                                           (99, None, "failed")])
def test_a_run_whose_end_the_store_cannot_write_still_ends(client, slow, monkeypatch, failures, stored, ending):
    """The store failing (sqlite's `database is locked`) on a background response's end: tried once more; failing
    again, the response ends failed, stored so; failing even then, GET answers the end the run holds. It said
    queued for ever."""
    import sqlite3

    from velollm.responses import ResponseStore

    put, written, left = ResponseStore.put, [], [failures]

    def flaky(store, response, *args):
        if response["status"] != "queued" and left[0] > 0:
            left[0] -= 1
            raise sqlite3.OperationalError("database is locked")
        put(store, response, *args)
        written.append(response["status"])

    monkeypatch.setattr(ResponseStore, "put", flaky)
    created = client.responses.create(**ASK, background=True, max_output_tokens=5, extra_body={"ignore_eos": True})
    final = _until(client, created.id)[-1]
    assert final.status == ending and final.output_text  # what it said is kept either way
    assert written == ["queued"] + ([stored] if stored else [])
    if ending == "failed":
        assert final.error.code == "server_error" and final.error.message == "the response could not be stored"
    events = list(client.responses.retrieve(created.id, stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == f"response.{ending}" and events[-1].response.status == ending
    assert client.responses.cancel(created.id).status == ending  # ended: answered as it is


@pytest.mark.parametrize("runner", ["this process", "another process"])
def test_a_run_that_left_memory_unstored_reads_failed_not_queued(monkeypatch, runner):
    """A background run whose end no write could store, once it has left memory (10 min, 64 runs on): its row
    still says queued, and a client polling for the end read queued for ever. A row of this process without its run
    has ended: GET and cancel answer it failed. A row another process runs (two servers sharing a store) is as it is."""
    import sqlite3

    from velollm.api import responses_lookup
    from velollm.responses import ResponseStore

    put = ResponseStore.put

    def end_never_stored(store, response, *args):
        if response["status"] != "queued":
            raise sqlite3.OperationalError("database is locked")
        put(store, response, *args)

    monkeypatch.setattr(ResponseStore, "put", end_never_stored)
    if runner == "another process":
        monkeypatch.setattr(responses_lookup, "this_process", lambda: "1@0.00")
    port = free_port()
    app = stub_app(StubEngine(token_delay_s=0.005), port=port)
    with ThreadedServer(app, port):
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=30)
        created = client.responses.create(**ASK, background=True, max_output_tokens=5, extra_body={"ignore_eos": True})
        assert _until(client, created.id)[-1].status == "failed"  # the end the run holds
        app.state.velollm.background.keep_finished = 0  # the run leaves memory at the next look-up
        later, cancelled = client.responses.retrieve(created.id), client.responses.cancel(created.id)
    if runner == "another process":
        assert later.status == cancelled.status == "queued"
        return
    assert later.status == cancelled.status == "failed"
    assert later.error.code == "server_error" and later.error.message == "the response could not be stored"


def test_a_reserved_run_is_held_until_it_starts_or_is_released():
    """The queued row is written before its run starts: a look-up meanwhile must not take it for one ended unstored."""
    from velollm.responses.background import BackgroundRun, BackgroundRuns

    runs = BackgroundRuns()
    runs.reserve("resp_a")
    runs.reserve("resp_b")
    assert runs.holds("resp_a") and runs.holds("resp_b") and not runs.holds("resp_c")
    runs.release("resp_b")
    assert not runs.holds("resp_b")

    async def started() -> None:
        run = BackgroundRun({"id": "resp_a", "status": "queued"})

        async def work(run: BackgroundRun) -> None:
            run.finish(run.response)

        runs.start(run, work)
        await run.task
        assert runs.holds("resp_a") and "resp_a" not in runs._reserved

    asyncio.run(started())


def test_shutdown_fails_the_runs_in_flight_and_frees_them(tmp_path):
    """A server stopped with a background response running stores it failed (it said in_progress for ever)."""
    from velollm.responses import ResponseStore

    engine, port, db = StubEngine(token_delay_s=0.005), free_port(), tmp_path / "responses.sqlite"
    with ThreadedServer(stub_app(engine, port=port, responses_db=str(db)), port):
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=30)
        created = client.responses.create(**ASK, background=True, **LONG)
        _until(client, created.id, lambda r: len(r.output_text) >= 5)
    assert engine.stats().num_allocated_blocks == 0
    store = ResponseStore(db)
    try:
        stored = store.get(created.id)
    finally:
        store.close()
    assert stored["status"] == "failed" and stored["error"]["code"] == "server_error"
    assert stored["background"] is True and stored["output"][0]["status"] == "incomplete"


class _ScriptedTurn:
    """The side of a create that run_in_background drives (api/responses._Turn): a background request's shell, its
    stream's opening events, and the statuses it was asked to store (`keep`, which each test scripts)."""

    def __init__(self) -> None:
        from velollm.responses import ResponseShell, parse_responses_request
        self.req = parse_responses_request({"model": "m", "input": "hi", "background": True})
        self.shell = ResponseShell(self.req)
        self.kept: list[str] = []

    async def keep(self, response):
        self.kept.append(response["status"])

    async def answer(self, stream, chunks, on_final):
        for event in stream.start():
            yield event
        async for _ in chunks:
            pass


async def _forever():
    """An answer that never comes: the run is cancelled or stopped while it waits."""
    await asyncio.sleep(60)
    yield {}


def test_a_cancelled_run_whose_end_the_store_cannot_write_holds_it():
    """A cancel whose store write fails twice: the run ends cancelled all the same (it raised past the run, which
    kept its queued object)."""
    from types import SimpleNamespace

    from velollm.api.responses_background import run_in_background
    from velollm.responses.background import BackgroundRuns

    class Turn(_ScriptedTurn):
        async def keep(self, response):
            self.kept.append(response["status"])
            if response["status"] != "queued":
                raise OSError("database is locked")

    skipped: list = []

    async def main() -> None:
        metrics = SimpleNamespace(observe_store_skip=lambda *labels: skipped.append(labels))
        state, turn = SimpleNamespace(background=BackgroundRuns(), metrics=metrics), Turn()
        await run_in_background(state, turn, _forever())
        run = state.background.get(turn.shell.id)
        await asyncio.sleep(0.01)
        await state.background.cancel(run)
        assert turn.kept == ["queued", "cancelled", "cancelled"] and run.done
        assert run.response["status"] == "cancelled"
        assert skipped == [("responses", "write_failed")]  # velollm_store_rows_skipped

    asyncio.run(main())


def test_cancel_on_the_real_engine_aborts_and_frees_its_blocks(live_server):
    """`velollm serve` on the demo model: a background response cancelled mid-answer gives its KV blocks back, and
    the engine answers the next request."""
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="x", max_retries=0, timeout=60)
    created = client.responses.create(model="demo", input="Tell a long story.", background=True,
                                      max_output_tokens=400, temperature=0, extra_body={"ignore_eos": True})
    _until(client, created.id, lambda r: r.status in TERMINAL or len(r.output_text) >= 3, timeout=60)
    assert live_server.metric("velollm_allocated_blocks", model="demo") > 0
    aborted = live_server.metric("velollm_aborted_requests_total", model="demo")
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status == "cancelled" and len(cancelled.output_text) >= 3  # mid-answer: not run to its end
    assert live_server.wait_metric("velollm_aborted_requests_total", lambda v: v > aborted, model="demo") > aborted
    assert client.responses.retrieve(created.id).status == "cancelled"
    assert live_server.wait_metric("velollm_allocated_blocks", lambda v: v == 0, model="demo") == 0
    after = client.responses.create(model="demo", input="Hi", max_output_tokens=4, temperature=0)
    assert after.status in ("completed", "incomplete") and after.output_text


def test_a_stop_while_a_cancel_stores_its_end_waits_for_it():
    """stop_all (shutdown) after a cancel whose run is storing its end: the store write is not cut (the response
    stayed queued)."""
    from types import SimpleNamespace

    from velollm.api.responses_background import run_in_background
    from velollm.responses.background import BackgroundRuns

    class Turn(_ScriptedTurn):
        async def keep(self, response):
            await asyncio.sleep(0.05)
            self.kept.append(response["status"])

    async def main() -> None:
        state, turn = SimpleNamespace(background=BackgroundRuns()), Turn()
        await run_in_background(state, turn, _forever())
        run = state.background.get(turn.shell.id)
        await asyncio.sleep(0.01)
        cancel = asyncio.create_task(state.background.cancel(run))
        await asyncio.sleep(0.01)  # storing the cancelled response now
        await state.background.stop_all()
        await cancel
        assert turn.kept == ["queued", "cancelled"] and run.response["status"] == "cancelled"

    asyncio.run(main())


def test_a_reader_whose_next_events_were_let_go_gets_a_numbered_error_event():
    """A reader so slow that the run's cap let its next events go: the stream ends in an `error` event (code
    events_dropped) numbered as the first event it missed, which the SDK's ResponseErrorEvent requires (it had no
    sequence_number)."""
    import json

    from openai.types.responses import ResponseErrorEvent

    from velollm.api.responses_background import events_answer
    from velollm.responses.background import BackgroundRun

    def delta(seq: int) -> dict:
        return {"type": "response.output_text.delta", "sequence_number": seq, "delta": "y" * 40}

    async def main() -> list[bytes]:
        run = BackgroundRun({"id": "resp_1", "status": "in_progress"}, max_event_bytes=1000)
        run.add(delta(0))
        frames = events_answer(run, None).body_iterator
        read = [await frames.__anext__()]
        for seq in range(1, 50):  # the reader away: the oldest go
            run.add(delta(seq))
        run.finish({"id": "resp_1", "status": "completed"})
        return read + [frame async for frame in frames]

    events = [json.loads(frame.split(b"data: ", 1)[1]) for frame in asyncio.run(main())]
    assert [e["sequence_number"] for e in events] == [0, 1]
    error = ResponseErrorEvent.model_validate(events[1])
    assert error.code == "events_dropped" and "starting_after" in error.message


def test_a_stream_asked_after_the_events_were_let_go_is_openai_s_400():
    """GET ?stream=true of a background response whose run is no longer kept (KEEP_S after its end, or past the
    count and bytes kept): OpenAI's 400 for a stream asked too late ("This response can no longer be streamed
    because it is more than 5 minutes old"), with the reason; not its events made again from the stored object,
    whose sequence numbers would not be those a client resuming after starting_after counted."""
    port = free_port()
    app = stub_app(StubEngine(), port=port)
    app.state.velollm.background.keep_s = 0.0  # a run is let go as soon as it has ended
    with ThreadedServer(app, port):
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=30)
        created = client.responses.create(**ASK, background=True, stream=True, max_output_tokens=3)
        events = list(created)
        assert events[-1].type == "response.incomplete"
        response_id = events[0].response.id
        assert client.responses.retrieve(response_id).status == "incomplete"  # stored
        for after in ({}, {"starting_after": events[-2].sequence_number}):
            with pytest.raises(openai.BadRequestError) as late:
                list(client.responses.retrieve(response_id, stream=True, **after))
            body = late.value.body
            assert body["type"] == "invalid_request_error" and body["param"] == "stream"
            assert body["message"].startswith("This response can no longer be streamed because its events are no "
                                              "longer held: they are kept 0 minutes after")


@pytest.mark.parametrize(("failures", "stored", "status"), [(1, "incomplete", "incomplete"), (2, "failed", "failed"),
                                                           (99, None, "failed")])
def test_a_whole_answer_whose_store_write_fails_is_still_answered(client, slow, monkeypatch, failures, stored,
                                                                  status):
    """A whole (non-stream, not background) response the store cannot write: tried once more; failing again it is
    answered failed (server_error, its output kept) and stored so if it can be, as a stream's and a background run's
    end, and counted (velollm_store_rows_skipped, write_failed). It was an HTTP 500, the answer the engine made
    lost."""
    import sqlite3

    from velollm.responses import ResponseStore

    put, written, left = ResponseStore.put, [], [failures]

    def flaky(store, response, *args):
        if left[0] > 0:
            left[0] -= 1
            raise sqlite3.OperationalError("database is locked")
        put(store, response, *args)
        written.append(response["status"])

    monkeypatch.setattr(ResponseStore, "put", flaky)
    skipped = slow.metric("velollm_store_rows_skipped_total", store="responses", outcome="write_failed")
    answered = client.responses.create(**ASK, max_output_tokens=5, extra_body={"ignore_eos": True})
    assert slow.metric("velollm_store_rows_skipped_total", store="responses",
                       outcome="write_failed") == skipped + (failures > 1)
    assert answered.status == status and len(answered.output_text) == 5  # what the engine made, either way
    assert written == ([stored] if stored else [])
    if status == "failed":
        assert answered.error.code == "server_error" and answered.error.message == "the response could not be stored"
    if stored:
        assert client.responses.retrieve(answered.id).model_dump() == answered.model_dump()
    else:
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(answered.id)
