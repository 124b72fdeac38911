"""WeightJob: a GGUF load's CPU work (dequantizing, repacking 4-bit matrices to int4) as jobs for a thread pool,
each tensor finished on the caller's thread in the file's order.

One tensor after another, each op of a dequantizer ran on torch's intra-op OpenMP team with a barrier per op:
on a shared CPU a team member that is descheduled holds the others at every barrier, spinning. Here `workers`
threads of one intra-op thread each take whole tensors, and the rows of a large one in pieces (torch releases
the GIL inside its ops), and never wait on each other: a Q4_K_M file of Llama-3.2-1B's shape loads in 5.0-6.5 s
where it took 10.8-20.5 s (2 shared EPYC cores at load 3.6-4.7, benchmarks/data/gguf_load_q4_k_m_threads.txt),
for 0.2-0.3 GB more peak RSS (the jobs in flight). The values are bit-identical: every block goes through the
same kernel, into its own rows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from velollm.engine.loader.chunk_pool import ordered_map

# A dequantized matrix over this many elements is split into pieces of rows of about as many (the embedding of a
# 128k vocabulary: 32 pieces), so that the workers share it.
PIECE_ELEMENTS = 1 << 23


@dataclass(frozen=True)
class WeightJob:
    """`run` on a worker thread; `finish(run's result)` on the caller's thread once this job and every earlier one
    ran, for a tensor's last job (None for the others): the (name, tensor) to yield."""

    run: Callable[[], Any]
    finish: Callable[[Any], tuple[str, Any]] | None = None


def run_jobs(jobs: Iterable[WeightJob], workers: int) -> Iterator[tuple[str, Any]]:
    """The finished tensors of `jobs`, in order; the jobs run on `workers` threads (one: here, in turn)."""
    initializer = _one_intra_op_thread(torch.get_num_threads())
    for job, result in ordered_map(_run, jobs, workers, initializer=initializer, name="velollm-load"):
        if job.finish is not None:
            yield job.finish(result)


def _run(job: WeightJob) -> Any:
    return job.run()


def _one_intra_op_thread(restore: int) -> Callable[[], None]:
    """A worker's initializer: its torch ops on one thread (no OpenMP team beside the other workers').

    torch.set_num_threads sets the calling thread's team size and also the process-wide count that a thread
    reads at its first parallel op: the count is put back to `restore` at once, from a thread of its own (so
    the worker keeps its one thread), and a thread whose first op fell in between would run on one thread."""

    def init() -> None:
        torch.get_num_threads()  # this thread's own first read of the process-wide count, before it is set
        torch.set_num_threads(1)
        resetter = threading.Thread(target=torch.set_num_threads, args=(restore,), name="velollm-load-threads")
        resetter.start()
        resetter.join()

    return init
