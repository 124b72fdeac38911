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

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from velollm.engine.loader.chunk_pool import ordered_map
from velollm.hw.torch_threads import one_intra_op_thread

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
    for job, result in ordered_map(_run, jobs, workers, initializer=one_intra_op_thread(), name="velollm-load"):
        if job.finish is not None:
            yield job.finish(result)


def _run(job: WeightJob) -> Any:
    return job.run()
