"""Independent pieces of work (a quantization's chunks of rows, a GGUF load's tensors) run on a thread pool, their
results taken in submission order, with a bounded number in flight so that memory stays bounded however long the
stream.

Threads rather than processes: the work is numpy ufuncs on arrays of a few hundred thousand values, and numpy
releases the GIL inside each of them (the Python between two ufuncs holds it for a few percent of the time), so
nothing is pickled, nothing is forked or spawned beside a server, and an error or a cancel has only threads to
stop. `default_workers()` is the CPUs this process may run on, capped where the GIL's share would stop paying.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

MAX_WORKERS = 8
Job = TypeVar("Job")
Result = TypeVar("Result")


def default_workers() -> int:
    """The CPUs this process may run on (its affinity, not the machine's count), at most MAX_WORKERS."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # (not on Linux)
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


def ordered_map(fn: Callable[[Job], Result], jobs: Iterable[Job], workers: int,
                initializer: Callable[[], None] | None = None, name: str = "velollm-quantize"
                ) -> Iterator[tuple[Job, Result]]:
    """(job, fn(job)) for each job, in the jobs' order, `fn` run on `workers` threads with at most 2 * workers
    jobs submitted and not yet taken. One worker: run here, one job at a time. The first error is raised here;
    leaving early (an error, a close) cancels the jobs not started and waits for the running ones.
    `initializer` runs first on each worker thread (not here, with one worker); `name` prefixes the threads'."""
    if workers <= 1:
        for job in jobs:
            yield job, fn(job)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name, initializer=initializer)
    window: deque[tuple[Job, Future[Result]]] = deque()
    try:
        for job in jobs:
            window.append((job, pool.submit(fn, job)))
            if len(window) >= 2 * workers:
                done, future = window.popleft()
                yield done, future.result()
        while window:
            done, future = window.popleft()
            yield done, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
