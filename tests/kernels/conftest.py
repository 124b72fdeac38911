"""Kernel tests: the Triton kernels run on CUDA when a GPU is present, else under the CPU interpreter."""

from __future__ import annotations

import os
import zlib

import pytest
import torch

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")

if not ON_GPU and os.environ.get("TRITON_INTERPRET") != "1":
    raise RuntimeError("kernel tests without a GPU need TRITON_INTERPRET=1 before triton kernels are defined "
                       "(tests/conftest.py sets it)")


@pytest.fixture
def device() -> str:
    return "cuda" if ON_GPU else "cpu"


@pytest.fixture(autouse=True)
def _fresh_seed(request: pytest.FixtureRequest) -> None:
    # Different inputs per test case, reproducible from the test id (str hash() is salted per process).
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


def poisoned(shape, dtype: torch.dtype, device: str) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


def make_paged_kv(
    context_lens: list[int], num_kv_heads: int, head_dim: int, dtype: torch.dtype, device: str,
    block_size: int = 16, extra_blocks: int = 2,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NaN-poisoned caches with random K/V only in each sequence's valid slots, blocks shuffled.

    Block 0 is never assigned, so block-table padding (0) points at NaN; every table has one padding column.
    """
    per_seq = [-(-n // block_size) for n in context_lens]
    num_blocks = 1 + sum(per_seq) + extra_blocks
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache, v_cache = poisoned(shape, dtype, device), poisoned(shape, dtype, device)
    order = (torch.randperm(num_blocks - 1) + 1).tolist()
    block_tables = torch.zeros((len(context_lens), max(per_seq, default=0) + 1), dtype=torch.int32)
    for s, n in enumerate(context_lens):
        blocks = torch.tensor([order.pop() for _ in range(per_seq[s])], dtype=torch.long)
        block_tables[s, : len(blocks)] = blocks.to(torch.int32)
        for cache in (k_cache, v_cache):
            data = torch.randn(len(blocks) * block_size, num_kv_heads, head_dim, device=device)
            data[n:] = float("nan")  # the tail of the last block stays poisoned
            cache[blocks.to(device)] = data.view(len(blocks), block_size, num_kv_heads, head_dim).to(dtype)
    return k_cache, v_cache, block_tables.to(device)


@pytest.fixture
def paged_kv():
    return make_paged_kv


@pytest.fixture
def poison():
    return poisoned
