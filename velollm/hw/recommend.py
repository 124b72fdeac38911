"""Serving settings that suit the detected hardware."""

from __future__ import annotations

from dataclasses import dataclass

from velollm.hw.detect import HardwareInfo

_GiB = 1 << 30


@dataclass(frozen=True)
class Recommendation:
    device: str
    dtype: str
    kv_cache_memory: int | None  # bytes on CPU; None on GPU (sized from free memory)
    max_num_seqs: int
    notes: tuple[str, ...]

    def serve_flags(self) -> str:
        flags = [f"--device {self.device}", f"--dtype {self.dtype}", f"--max-num-seqs {self.max_num_seqs}"]
        if self.kv_cache_memory is not None:
            flags.append(f"--kv-cache-memory {self.kv_cache_memory // (1 << 20)}MiB")
        return " ".join(flags)


def recommend(hw: HardwareInfo) -> Recommendation:
    if hw.gpus:
        gpu = max(hw.gpus, key=lambda g: g.total_memory)
        bf16 = gpu.compute_capability >= (8, 0)
        notes = [f"GPU {gpu.index}: {gpu.name}, {gpu.total_memory / _GiB:.0f} GiB"]
        if not bf16:
            notes.append("no bfloat16 on this GPU generation: float16")
        return Recommendation("cuda", "bfloat16" if bf16 else "float16", None, 256, tuple(notes))
    # On CPU the KV cache competes with the weights for RAM: a quarter of what is free, 1-8 GiB.
    kv = min(max(hw.available_memory // 4, _GiB), 8 * _GiB)
    seqs = 64 if hw.num_cores <= 4 else 128
    notes = [f"CPU only ({hw.num_cores} cores): decode speed is bound by memory bandwidth"]
    if hw.cpu_bf16:
        notes.append("bfloat16 in hardware (AVX512-BF16/AMX): half the bytes of float32, 2x+ faster matmuls")
    return Recommendation("cpu", "bfloat16" if hw.cpu_bf16 else "float32", kv, seqs, tuple(notes))
