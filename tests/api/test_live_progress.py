"""velollm/api/live_progress.py: lines a worker emits go out before it ends; a refusal before the first line is
the request's own error (its status), a failure after it the stream's last `{"error"}` line; `finish` runs once,
after the worker, even when the client stops reading."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from starlette.responses import StreamingResponse

from velollm.api.live_progress import live_progress
from velollm.errors import InvalidRequest


def _run(work):
    """(response, body lines, finish calls) of live_progress around `work(emit)` run in a thread."""
    finished = []

    async def go():
        response = await live_progress(lambda emit: asyncio.to_thread(work, emit), lambda: finished.append(1))
        lines = []
        if isinstance(response, StreamingResponse):
            async for chunk in response.body_iterator:
                lines.append(json.loads(chunk))
        else:
            lines.append(json.loads(response.body))
        await asyncio.sleep(0.05)
        return response, lines

    response, lines = asyncio.run(go())
    return response, lines, finished


def test_emitted_lines_stream_before_the_worker_ends():
    release = threading.Event()

    def work(emit):
        emit({"status": "quantizing", "completed": 0})
        assert release.wait(5)  # the first line must be out before this returns
        emit({"status": "quantizing", "completed": 10})
        return [{"status": "success"}]

    async def go():
        response = await live_progress(lambda emit: asyncio.to_thread(work, emit), lambda: None)
        it = response.body_iterator
        first = json.loads(await it.__anext__())
        release.set()
        return first, [json.loads(chunk) async for chunk in it]

    first, rest = asyncio.run(go())
    assert first == {"status": "quantizing", "completed": 0}
    assert rest == [{"status": "quantizing", "completed": 10}, {"status": "success"}]


def test_a_refusal_before_the_first_line_is_the_requests_error():
    def work(emit):
        raise InvalidRequest("unsupported quantization type Q2")

    finished = []

    async def go():
        await live_progress(lambda emit: asyncio.to_thread(work, emit), lambda: finished.append(1))

    with pytest.raises(InvalidRequest, match="Q2"):
        asyncio.run(go())
    assert finished == [1]


def test_a_failure_after_the_first_line_ends_the_stream():
    def work(emit):
        emit({"status": "quantizing"})
        raise OSError(28, "No space left on device")

    response, lines, finished = _run(work)
    assert response.status_code == 200 and lines[0] == {"status": "quantizing"}
    assert "No space left on device" in lines[-1]["error"] and finished == [1]


def test_a_worker_that_emits_nothing_answers_as_before():
    response, lines, finished = _run(lambda emit: [{"status": "writing manifest"}, {"status": "success"}])
    assert response.status_code == 200
    assert lines == [{"status": "writing manifest"}, {"status": "success"}] and finished == [1]


def test_a_client_that_leaves_finishes_after_the_worker():
    release, finished = threading.Event(), []

    def work(emit):
        emit({"status": "quantizing"})
        release.wait(5)
        return [{"status": "success"}]

    async def go():
        response = await live_progress(lambda emit: asyncio.to_thread(work, emit), lambda: finished.append(1))
        it = response.body_iterator
        await it.__anext__()
        await it.aclose()  # the client went away mid-quantization
        assert finished == []  # the worker still holds the store
        release.set()
        for _ in range(100):
            if finished:
                break
            await asyncio.sleep(0.02)

    asyncio.run(go())
    assert finished == [1]
