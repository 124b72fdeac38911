"""one_intra_op_thread: the worker runs on one torch thread, and every other thread, started before or after the
worker's start, keeps the process's count. Each case runs in a fresh interpreter: the count is process-wide."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

torch.set_num_threads(3)  # the process's count, whatever this CPU has
{make_pool}

def count_in_new_thread():
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]

print(worker_count(), count_in_new_thread(), torch.get_num_threads())
"""

WITH_HELPER = """
from velollm.hw.torch_threads import one_intra_op_thread
pool = ThreadPoolExecutor(1, initializer=one_intra_op_thread())
worker_count = lambda: pool.submit(torch.get_num_threads).result()
"""

SEMANTIC_TIER = """
from pathlib import Path
import tempfile
import numpy as np
from velollm.cache.semantic_tier import SemanticTier
from velollm.cache.sqlite_store import SQLiteStore

class Embedder:
    dim = 4
    max_tokens = 16
    def embed(self, texts):
        return np.ones((len(texts), 4), np.float32) / 2

tier = SemanticTier(SQLiteStore(Path(tempfile.mkdtemp()) / "cache.db", 100), Embedder(), threshold=0.9)
worker_count = lambda: tier.executor.submit(torch.get_num_threads).result()
"""


def _counts(make_pool: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(make_pool=make_pool)], capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return [int(x) for x in out.stdout.split()]


@pytest.mark.parametrize("make_pool", [WITH_HELPER, SEMANTIC_TIER], ids=["helper", "semantic_tier"])
def test_the_worker_has_one_thread_and_the_other_threads_keep_the_process_count(make_pool):
    assert _counts(make_pool) == [1, 3, 3]


def test_a_plain_set_num_threads_in_a_worker_would_leak_to_later_threads():
    """Why the helper exists: torch's count is process-wide for a thread's first read (if torch stops leaking
    it, the helper's reset is no longer needed). Even the main thread, which set 3 but had not read it yet,
    is on 1 after it."""
    plain = """
pool = ThreadPoolExecutor(1, initializer=lambda: torch.set_num_threads(1))
worker_count = lambda: pool.submit(torch.get_num_threads).result()
"""
    assert _counts(plain)[:2] == [1, 1]
