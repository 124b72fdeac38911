"""Serving settings that suit the detected hardware, each with the reason it has that value."""

from __future__ import annotations

from dataclasses import dataclass

from velollm.hw.detect import GPUInfo, HardwareInfo

_GiB = 1 << 30
# Memory other processes hold on a GPU beyond which --gpu-memory-utilization is lowered to leave it to them.
_FOREIGN_MEMORY = _GiB
# Below this a GPU's KV cache is tight (Ollama's q8_0 advice in ollama_env.py uses the same line); the fp8
# KV cache needs compute capability 8.9 (velollm/kernels/fp8.py; hw imports nothing of velollm).
_TIGHT_GPU = 24 * _GiB
_FP8_CAPABILITY = (8, 9)


@dataclass(frozen=True)
class Setting:
    """One recommended value: a serve flag (`--max-num-seqs`) or an environment variable (`OLLAMA_*`)."""

    name: str
    value: str
    reason: str


@dataclass(frozen=True)
class Recommendation:
    device: str
    dtype: str
    kv_cache_memory: int | None  # bytes on CPU; None on GPU (sized from free memory)
    max_num_seqs: int
    notes: tuple[str, ...]
    gpu_memory_utilization: float | None = None  # GPU only
    settings: tuple[Setting, ...] = ()  # the serve flags above, each with its reason
    fp8_kv_cache: bool = False  # the GPU converts e4m3 natively: `--kv-cache-dtype fp8` is an option here

    def serve_flags(self) -> str:
        return " ".join(f"{s.name} {s.value}" if s.value else s.name for s in self.settings)

    @property
    def kv_cache_dtype(self) -> str:
        """The --kv-cache-dtype of the advice: fp8 where advised, else auto (the model's dtype)."""
        return next((s.value for s in self.settings if s.name == "--kv-cache-dtype"), "auto")


def _size(n: int) -> str:
    return f"{n // (1 << 20)}MiB"


def main_gpu(hw: HardwareInfo) -> GPUInfo | None:
    """The GPU `--device cuda` uses: the one with the most memory."""
    return max(hw.gpus, key=lambda g: g.total_memory) if hw.gpus else None


def recommend(hw: HardwareInfo) -> Recommendation:
    gpu = main_gpu(hw)
    return _gpu_recommendation(gpu) if gpu is not None else _cpu_recommendation(hw)


def _gpu_recommendation(gpu: GPUInfo) -> Recommendation:
    bf16 = gpu.compute_capability >= (8, 0)
    dtype = "bfloat16" if bf16 else "float16"
    notes = [f"GPU {gpu.index}: {gpu.name}, {gpu.total_memory / _GiB:.0f} GiB"]
    if not bf16:
        notes.append("no bfloat16 on this GPU generation: float16")
    foreign = (gpu.used_memory or 0)
    utilization = 0.9
    util_reason = "weights, activations and KV cache in 90% of the GPU; the rest for the CUDA context and allocator slack"
    if foreign > _FOREIGN_MEMORY:
        utilization = max(0.1, round(0.9 - foreign / gpu.total_memory, 2))
        util_reason = (f"other processes hold {foreign / _GiB:.1f} GiB on GPU {gpu.index} now: "
                       f"{utilization:.0%} leaves it to them")
    seqs = 256 if gpu.total_memory >= 40 * _GiB else 128
    settings = (
        Setting("--device", "cuda", f"{gpu.name} (sm_{gpu.compute_capability[0]}{gpu.compute_capability[1]}) runs "
                                    "the Triton kernels"),
        Setting("--dtype", dtype, "bfloat16 in hardware from sm_80 on" if bf16 else "no bfloat16 before sm_80"),
        Setting("--max-num-seqs", str(seqs), f"{gpu.total_memory / _GiB:.0f} GiB: continuous batching keeps "
                f"{seqs} requests in one decode step before KV memory, not compute, is the limit"),
        Setting("--gpu-memory-utilization", f"{utilization:g}", util_reason),
    )
    fp8 = gpu.compute_capability >= _FP8_CAPABILITY
    if gpu.total_memory < _TIGHT_GPU and fp8:
        settings += (Setting("--kv-cache-dtype", "fp8", f"{gpu.total_memory / _GiB:.0f} GiB is tight: an fp8 (e4m3) "
                             "KV cache holds twice the tokens (sm_89+ converts it natively)"),)
    return Recommendation("cuda", dtype, None, seqs, tuple(notes), utilization, settings, fp8)


def _cpu_recommendation(hw: HardwareInfo) -> Recommendation:
    # On CPU the KV cache competes with the weights for RAM: a quarter of what is free, 1-8 GiB.
    kv = min(max(hw.available_memory // 4, _GiB), 8 * _GiB)
    seqs = 64 if hw.num_cores <= 4 else 128
    dtype = "bfloat16" if hw.cpu_bf16 else "float32"
    notes = [f"CPU only ({hw.num_cores} cores): decode speed is bound by memory bandwidth"]
    if hw.cpu_bf16:
        notes.append("bfloat16 in hardware (AVX512-BF16/AMX): half the bytes of float32, 2x+ faster matmuls")
    settings = (
        Setting("--device", "cpu", "no CUDA GPU" + (f" ({hw.nvml_error})" if hw.nvml_error else "")),
        Setting("--dtype", dtype, "bfloat16 dot products in hardware" if hw.cpu_bf16
                else "no bfloat16 in hardware on this CPU: emulated bfloat16 is slower than float32"),
        Setting("--max-num-seqs", str(seqs), f"{hw.num_cores} cores: batching more requests per step raises "
                "throughput until the matmuls become compute-bound"),
        Setting("--kv-cache-memory", _size(kv), f"a quarter of the {hw.available_memory / _GiB:.1f} GiB free "
                "(1-8 GiB): the rest stays for weights and other programs"),
    )
    return Recommendation("cpu", dtype, kv, seqs, tuple(notes), None, settings)
