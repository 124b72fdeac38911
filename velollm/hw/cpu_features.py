"""CPU instruction-set features that change what runs fastest (read from /proc/cpuinfo on Linux)."""

from __future__ import annotations

import functools
from pathlib import Path

# bfloat16 dot products in hardware: AVX512-BF16 (AMD Zen 4+, Intel Cooper Lake+) or AMX-BF16 (Intel
# Sapphire Rapids+). There torch's bfloat16 matmuls run 2.3-2.6x faster than float32 ones at every batch
# size (measured on a Zen 4 EPYC: half the bytes for decode, twice the FLOP/s for prefill); elsewhere
# bfloat16 is emulated and slower than float32.
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The `flags` of the first processor in /proc/cpuinfo text (x86; ARM calls them `Features`)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        return parse_cpu_flags(Path("/proc/cpuinfo").read_text())
    except OSError:  # not Linux: no flags known, so nothing is assumed
        return frozenset()


def has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    return bool((cpu_flags() if flags is None else flags) & _BF16_FLAGS)


def default_cpu_dtype() -> str:
    """The compute dtype for weights that do not fix one (GGUF, float16 checkpoints) on this CPU."""
    return "bfloat16" if has_native_bf16() else "float32"
