"""Benchmark helpers: JSON rows and CUDA-graph timing (copy bandwidth: velollm.hw.bandwidth).

Every benchmark prints one JSON object per line with a "what" key; benchmarks/report_table.py turns
those lines into the table gpu_check.sh prints last.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any, Callable

import torch


SMALL_HELP = "tiny shapes on CPU (TRITON_INTERPRET=1), a dry run"


def kernel_device(small: bool) -> str | None:
    """Where a kernel benchmark runs: "cpu" for a --small dry run, else "cuda"; None (said on stderr)
    when there is no CUDA device."""
    if small:
        return "cpu"
    if not torch.cuda.is_available():
        print("no CUDA device; use --small with TRITON_INTERPRET=1 for a dry run", file=sys.stderr)
        return None
    return "cuda"


def emit(**row: Any) -> dict[str, Any]:
    print(json.dumps(row), flush=True)
    return row


def time_cuda(fn: Callable[[], Any], *, calls_per_graph: int = 10, repeats: int = 5, use_graph: bool = True) -> float:
    """Median seconds per call. A CUDA graph of several calls removes launch overhead, as the engine's
    decode graphs do; use_graph=False times eager launches."""
    fn()
    torch.cuda.synchronize()
    if use_graph:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn()  # warm-up on the capture stream, as torch.cuda.graphs recommends
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls_per_graph):
                fn()
        run = graph.replay
    else:
        def run() -> None:
            for _ in range(calls_per_graph):
                fn()
    run()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1e3 / calls_per_graph)
    return statistics.median(samples)


def time_cpu(fn: Callable[[], Any], repeats: int = 3) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)
