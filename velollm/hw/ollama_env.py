"""Environment for an Ollama server on this machine (for users who keep Ollama beside or behind VeloLLM)."""

from __future__ import annotations

from velollm.hw.detect import HardwareInfo
from velollm.hw.recommend import Setting, main_gpu

_GiB = 1 << 30


def ollama_settings(hw: HardwareInfo) -> tuple[Setting, ...]:
    """OLLAMA_NUM_PARALLEL, OLLAMA_MAX_LOADED_MODELS, OLLAMA_FLASH_ATTENTION, OLLAMA_KV_CACHE_TYPE and
    OLLAMA_KEEP_ALIVE for this machine, each with its reason."""
    gpu = main_gpu(hw)
    memory = gpu.total_memory if gpu is not None else hw.available_memory
    where = f"{gpu.name} ({memory / _GiB:.0f} GiB)" if gpu is not None else f"CPU RAM ({memory / _GiB:.0f} GiB free)"
    if gpu is not None:
        parallel = 8 if memory >= 40 * _GiB else 4 if memory >= 16 * _GiB else 2
        parallel_reason = (f"{where}: each parallel slot reserves a full context of KV cache; {parallel} slots "
                           "batch concurrent requests without starving the weights of memory")
    else:
        parallel = 2 if hw.num_cores >= 8 else 1
        parallel_reason = (f"{hw.num_cores} cores: CPU decode is bound by memory bandwidth, so parallel requests "
                           "share it" + (" (2 still overlap prompt processing with decoding)" if parallel == 2 else ""))
    loaded = max(1, len(hw.gpus)) * (2 if memory >= 40 * _GiB else 1)
    fa = gpu is None or gpu.compute_capability >= (7, 0)
    tight = memory < 24 * _GiB
    settings = [
        Setting("OLLAMA_NUM_PARALLEL", str(parallel), parallel_reason),
        Setting("OLLAMA_MAX_LOADED_MODELS", str(loaded),
                f"{where}: " + ("room for two models per GPU, so switching models does not reload"
                                if loaded > len(hw.gpus or [0]) else "one model at a time fits with its KV cache")),
        Setting("OLLAMA_FLASH_ATTENTION", "1" if fa else "0",
                "flash attention cuts KV memory traffic and is required for a quantized KV cache" if fa
                else f"{gpu.name if gpu else ''} predates sm_70: llama.cpp's flash attention is slow there"),
    ]
    if fa:
        settings.append(Setting(
            "OLLAMA_KV_CACHE_TYPE", "q8_0" if tight else "f16",
            f"{where} is tight: q8_0 halves KV memory (doubling context or parallel slots) at a negligible "
            "quality cost" if tight else f"{where} has room: full-precision f16 KV cache, no quantization error"))
    settings.append(Setting(
        "OLLAMA_KEEP_ALIVE", "30m" if memory >= 24 * _GiB else "5m",
        "memory to spare: keep models loaded through pauses (a reload costs seconds)" if memory >= 24 * _GiB
        else "Ollama's default: give memory back to other programs after 5 idle minutes"))
    return tuple(settings)
