"""BackgroundRun and BackgroundRuns: events replayed after any sequence number then followed, the per-run cap
(EventsGone before what is kept), finished runs kept within their limits, cancel and stop_all."""

from __future__ import annotations

import asyncio
import json

import pytest

from velollm.responses.background import BackgroundRun, BackgroundRuns, EventsGone


def _event(seq: int, text: str = "x") -> dict:
    return {"type": "response.output_text.delta", "sequence_number": seq, "delta": text}


def _seqs(frames: list[bytes]) -> list[int]:
    return [json.loads(f.split(b"data: ", 1)[1])["sequence_number"] for f in frames]


async def _collect(run: BackgroundRun, after: int | None = None) -> list[bytes]:
    return [frame async for frame in run.frames(after)]


def test_frames_replay_after_a_sequence_number_then_follow_until_the_end():
    async def main() -> None:
        run = BackgroundRun({"id": "resp_1"})
        for seq in range(3):
            run.add(_event(seq))
        everything = asyncio.create_task(_collect(run))
        resumed = asyncio.create_task(_collect(run, 1))
        await asyncio.sleep(0.01)
        assert not everything.done()  # waiting for more
        run.add(_event(3))
        run.finish({"id": "resp_1", "status": "completed"})
        assert _seqs(await everything) == [0, 1, 2, 3]
        assert _seqs(await resumed) == [2, 3]
        assert await _collect(run, 3) == []  # nothing after the last, and the run is over
        run.check_resumable(-5)  # every event is held: not EventsGone (the API refuses below -1 itself)

    asyncio.run(main())


def test_a_run_keeps_its_newest_events_under_its_cap():
    run = BackgroundRun({"id": "resp_1"}, max_event_bytes=1000)
    for seq in range(50):
        run.add(_event(seq, "y" * 40))
    assert run.num_bytes <= 1000
    with pytest.raises(EventsGone):
        run.check_resumable(None)
    kept = asyncio.run(_collect_done(run, 45))
    assert _seqs(kept) == [46, 47, 48, 49]


async def _collect_done(run: BackgroundRun, after: int) -> list[bytes]:
    run.finish({"id": run.id})
    return await _collect(run, after)


def test_finished_runs_are_kept_within_their_limits():
    async def main() -> None:
        runs = BackgroundRuns(keep_finished=2, keep_bytes=1 << 20, keep_s=60)

        async def work(run: BackgroundRun) -> None:
            run.add(_event(0))
            run.finish({"id": run.id, "status": "completed"})

        for i in range(3):
            runs.start(BackgroundRun({"id": f"resp_{i}"}), work)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        assert runs.get("resp_0") is None and runs.get("resp_2").done
        runs.keep_s = 0  # too old now
        await asyncio.sleep(0.01)
        assert runs.get("resp_1") is None

    asyncio.run(main())


def test_a_forgotten_run_is_gone():
    async def main() -> None:
        runs = BackgroundRuns()

        async def work(run: BackgroundRun) -> None:
            run.finish({"id": run.id, "status": "completed"})

        runs.start(BackgroundRun({"id": "resp_1"}), work)
        await runs.wait()
        assert runs.get("resp_1").done
        runs.forget("resp_1")
        runs.forget("resp_nope")  # an id it never had: nothing to drop
        assert runs.get("resp_1") is None

    asyncio.run(main())


def test_cancel_and_stop_all_end_the_runs_with_their_reason():
    async def main() -> None:
        runs = BackgroundRuns()
        reasons = {}

        async def work(run: BackgroundRun) -> None:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                reasons[run.id] = run.stop_reason
                run.finish({"id": run.id, "status": run.stop_reason})

        one, two = BackgroundRun({"id": "resp_1"}), BackgroundRun({"id": "resp_2"})
        runs.start(one, work)
        runs.start(two, work)
        await asyncio.sleep(0)
        await runs.cancel(one)
        assert one.done and reasons == {"resp_1": "cancelled"}
        await runs.stop_all()
        assert two.done and reasons["resp_2"] == "shutdown"

    asyncio.run(main())


def test_a_run_whose_final_event_is_out_is_let_finish():
    async def main() -> None:
        runs = BackgroundRuns()

        async def work(run: BackgroundRun) -> None:
            run.finishing = True
            await asyncio.sleep(0.02)  # storing the final response
            run.finish({"id": run.id, "status": "completed"})

        run = BackgroundRun({"id": "resp_1"})
        runs.start(run, work)
        await asyncio.sleep(0)
        await runs.cancel(run)
        assert run.response["status"] == "completed"

    asyncio.run(main())


def test_a_run_cancelled_at_once_still_ends_its_work():
    """Cancelled before its task took a step, the run still runs its work's ending (else an engine request would be
    left running and the response queued)."""
    async def main() -> None:
        runs = BackgroundRuns()
        ended = []

        async def work(run: BackgroundRun) -> None:
            try:
                await asyncio.sleep(60)
            finally:
                ended.append(run.id)
                run.finish({"id": run.id, "status": "cancelled"})

        run = BackgroundRun({"id": "resp_1"})
        runs.start(run, work)
        await runs.cancel(run)  # no step taken yet
        assert ended == ["resp_1"] and run.done and runs.get("resp_1") is run

    asyncio.run(main())


def test_a_reader_keeping_up_gets_every_event_while_the_oldest_go():
    async def main() -> None:
        run = BackgroundRun({"id": "resp_1"}, max_event_bytes=2000)
        reader = asyncio.create_task(_collect(run))
        for seq in range(300):
            run.add(_event(seq, "z" * 30))
            await asyncio.sleep(0)
        run.finish({"id": "resp_1"})
        assert _seqs(await reader) == list(range(300))
        assert run.num_bytes <= 2000 and _seqs(await _collect(run, 290)) == list(range(291, 300))

    asyncio.run(main())


def test_a_run_whose_work_fails_is_logged_and_ended(caplog):
    async def main() -> None:
        runs = BackgroundRuns()

        async def work(run: BackgroundRun) -> None:
            run.add(_event(0))
            raise OSError("disk full")

        run = BackgroundRun({"id": "resp_1", "status": "queued"})
        runs.start(run, work)
        assert _seqs(await _collect(run)) == [0]  # the reader is let go, not left waiting
        assert run.done and runs.get("resp_1") is run

    asyncio.run(main())
    assert "background response resp_1 failed" in caplog.text and "disk full" in caplog.text


def test_the_final_event_out_is_what_the_run_shows():
    """A run whose final event is out shows that end, also before it is done (its engine request still closing):
    a client that read response.completed and then GET the response got the run mid-answer, in_progress."""
    run = BackgroundRun({"id": "resp_1", "status": "queued"})
    run.snapshot = lambda: {"id": "resp_1", "status": "in_progress"}  # the stream's, mid-answer
    run.add(_event(0))
    assert run.snapshot()["status"] == "in_progress"
    final = {"id": "resp_1", "status": "completed", "output": []}
    run.add({"type": "response.completed", "sequence_number": 1, "response": final})
    assert not run.done and run.snapshot() is final and run.response is final
