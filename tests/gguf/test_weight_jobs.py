"""velollm/engine/loader/weight_jobs.py and the GGUF load on it: tensors finished in order on the caller's thread,
workers of one torch intra-op thread each (the process-wide count left as it was), and the weights of a threaded
load, large matrices in pieces of rows, bit-identical to one thread's and to gguf-py's."""

from __future__ import annotations

import threading
import warnings

import pytest
import torch

from velollm.engine.loader import gguf, gguf_jobs
from velollm.engine.loader.resolve import resolve_model
from velollm.engine.loader.weight_jobs import WeightJob, run_jobs
from velollm.kernels.int4_cpu import Int4Weight

from .test_gguf_weights import _reference_tensors
from .tiny_gguf import gguf_name


def _thread_count_in_a_new_thread() -> int:
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]


def test_jobs_run_on_one_intra_op_thread_each_and_finish_in_order_here():
    before = torch.get_num_threads()
    ran: list[tuple[str, int]] = []
    finished: list[str] = []

    def run(i: int) -> int:
        ran.append((threading.current_thread().name, torch.get_num_threads()))
        torch.ones(1 << 16).mul_(2)  # a parallel op: on the worker's own team of one
        return i

    def finish(i: int) -> tuple[str, int]:
        finished.append(threading.current_thread().name)
        return f"t{i}", i

    jobs = [WeightJob(lambda i=i: run(i), None if i % 3 else lambda r: finish(r)) for i in range(30)]
    assert list(run_jobs(jobs, 2)) == [(f"t{i}", i) for i in range(0, 30, 3)]
    assert {name.split("_")[0] for name, _ in ran} == {"velollm-load"} and {n for _, n in ran} == {1}
    assert set(finished) == {threading.current_thread().name}
    assert torch.get_num_threads() == before and _thread_count_in_a_new_thread() == before


def _load(path, config, workers: int, int4: bool = False) -> list[tuple[str, torch.Tensor | Int4Weight]]:
    return list(gguf.iter_weights(path, config, int4=int4, workers=workers))


@pytest.mark.parametrize("arch", ["llama", "qwen3"])  # llama: the Q/K rows unpermuted after the pieces
def test_a_threaded_load_in_row_pieces_is_bit_identical(fixtures, monkeypatch, arch):
    path = fixtures.kquant(arch, "Q4_K_M")
    config = resolve_model(str(path), dtype="float32").config
    serial = _load(path, config, 1)
    monkeypatch.setattr(gguf_jobs, "PIECE_ELEMENTS", 1000)  # every matrix in pieces of a few rows, the last one short
    threaded = _load(path, config, 2)
    assert [name for name, _ in threaded] == [name for name, _ in serial]
    reference = _reference_tensors(path, config)
    for (name, ours), (_, theirs) in zip(threaded, serial, strict=True):
        assert torch.equal(ours, theirs) and torch.equal(ours, reference[gguf_name(name)]), name


def test_a_threaded_int4_load_is_identical(fixtures, monkeypatch):
    """The CPU's bfloat16 path (`velollm serve` on an AVX512-BF16 CPU): Q4_K repacked, the rest dequantized."""
    pytest.importorskip("llama_cpp")
    from velollm.kernels import int4_cpu

    if not int4_cpu.available():
        pytest.skip("no CPU int4 kernels in this torch")
    path = fixtures.kquant("llama", "Q4_K_M")
    config = resolve_model(str(path), dtype="bfloat16").config
    serial = _load(path, config, 1, int4=True)
    monkeypatch.setattr(gguf_jobs, "PIECE_ELEMENTS", 1000)
    threaded = _load(path, config, 2, int4=True)
    assert any(isinstance(w, Int4Weight) for _, w in threaded)
    for (name, ours), (_, theirs) in zip(threaded, serial, strict=True):
        if isinstance(ours, Int4Weight):
            assert torch.equal(ours.packed, theirs.packed) and torch.equal(ours.scales_and_zeros,
                                                                           theirs.scales_and_zeros), name
        else:
            assert ours.dtype == torch.bfloat16 and torch.equal(ours, theirs), name


@pytest.mark.parametrize("piece_elements", [1000, 1 << 30], ids=["pieces", "whole"])
@pytest.mark.parametrize("int4", [False, True], ids=["dequantized", "int4"])
def test_a_threaded_load_leaves_the_warnings_filters_alone(fixtures, monkeypatch, piece_elements, int4):
    """catch_warnings swaps the process-wide filter list: blocks of it interleaved on a load's workers left one's
    "ignore UserWarning" behind (every UserWarning silenced after a load). The map is read into tensors on the
    loading thread; the workers never enter it."""
    if int4:
        from velollm.kernels import int4_cpu

        if not int4_cpu.available():
            pytest.skip("no CPU int4 kernels in this torch")
    path = fixtures.kquant("llama", "Q4_K_M")
    config = resolve_model(str(path), dtype="bfloat16" if int4 else "float32").config
    monkeypatch.setattr(gguf_jobs, "PIECE_ELEMENTS", piece_elements)
    entered: set[str] = set()
    real = warnings.catch_warnings

    class Spy(real):  # type: ignore[misc, valid-type]
        def __enter__(self):
            entered.add(threading.current_thread().name)
            return super().__enter__()

    monkeypatch.setattr(warnings, "catch_warnings", Spy)
    before = list(warnings.filters)
    for _ in range(3):
        assert _load(path, config, 4, int4=int4)
    assert entered == {threading.current_thread().name}
    assert warnings.filters == before
