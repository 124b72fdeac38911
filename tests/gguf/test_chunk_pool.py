"""velollm/engine/loader/chunk_pool.py: results in the jobs' order whatever order the threads finish in, a
bounded number of jobs drawn ahead, the first error raised where the results are taken, and no thread left
behind after an error or an early close."""

from __future__ import annotations

import os
import threading
import time

import pytest

from velollm.engine.loader.chunk_pool import MAX_WORKERS, default_workers, ordered_map


def _pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("velollm-quantize")]


@pytest.mark.parametrize("workers", [1, 3])
def test_results_come_in_the_jobs_order(workers):
    def slow_first(job: int) -> int:
        time.sleep(0.02 if job % 3 == 0 else 0.001)  # later jobs finish first
        return job * job

    assert list(ordered_map(slow_first, range(20), workers)) == [(j, j * j) for j in range(20)]
    assert not _pool_threads()


def test_jobs_are_drawn_at_most_two_per_worker_ahead():
    drawn = []

    def jobs():
        for j in range(50):
            drawn.append(j)
            yield j

    for taken, (job, _) in enumerate(ordered_map(lambda j: j, jobs(), 3), start=1):
        assert len(drawn) - taken <= 2 * 3, (job, len(drawn))
    assert len(drawn) == 50


def test_an_error_is_raised_where_results_are_taken_and_stops_the_rest():
    started = []

    def fail_at_5(job: int) -> int:
        started.append(job)
        if job == 5:
            raise RuntimeError("chunk 5 failed")
        time.sleep(0.005)
        return job

    taken = []
    with pytest.raises(RuntimeError, match="chunk 5 failed"):
        for job, _ in ordered_map(fail_at_5, range(1000), 2):
            taken.append(job)
    assert taken == [0, 1, 2, 3, 4]
    assert max(started) < 5 + 2 * 2 + 1  # nothing past the window was started
    assert not _pool_threads()


def test_closing_early_cancels_and_joins():
    results = ordered_map(lambda j: time.sleep(0.01) or j, range(1000), 2)
    assert next(results) == (0, 0)
    results.close()
    assert not _pool_threads()


def test_default_workers_is_the_affinity_capped(monkeypatch):
    for cpus, expected in ((set(range(32)), MAX_WORKERS), ({3}, 1), ({0, 5}, 2)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, cpus=cpus: cpus, raising=False)
        assert default_workers() == expected
