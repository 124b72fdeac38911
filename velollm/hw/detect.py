"""What this machine has: CPU, memory, GPUs, an Ollama store and server. Pure reads; no CUDA init on import."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from velollm.hw.cpu_features import has_native_bf16


@dataclass(frozen=True)
class GPUInfo:
    index: int
    name: str
    total_memory: int  # bytes
    compute_capability: tuple[int, int]


@dataclass(frozen=True)
class OllamaInfo:
    store: Path
    num_models: int
    host: str
    server_version: str | None  # None when no Ollama answers at host


@dataclass(frozen=True)
class HardwareInfo:
    cpu: str
    num_cores: int
    total_memory: int
    available_memory: int
    gpus: tuple[GPUInfo, ...] = field(default_factory=tuple)
    ollama: OllamaInfo | None = None
    cpu_bf16: bool = False  # bfloat16 dot products in hardware (AVX512-BF16 / AMX-BF16)


def detect_gpus() -> tuple[GPUInfo, ...]:
    try:
        import torch
    except ImportError:
        return ()
    if not torch.cuda.is_available():
        return ()
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(GPUInfo(index, props.name, props.total_memory, (props.major, props.minor)))
    return tuple(gpus)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def detect_ollama(env: Mapping[str, str], timeout: float = 0.5) -> OllamaInfo:
    import httpx

    from velollm.engine.loader.ollama_store import list_models, models_dir
    from velollm.wire.ollama_host import parse_ollama_host

    store = models_dir(env)
    num_models = len(list_models(store)) if store.exists() else 0
    host = parse_ollama_host(env.get("OLLAMA_HOST"))
    try:
        version = httpx.get(f"{host}/api/version", timeout=timeout).json().get("version")
    except (httpx.HTTPError, ValueError):
        version = None
    return OllamaInfo(store, num_models, host, version)


def detect(env: Mapping[str, str] | None = None, *, probe_ollama: bool = True) -> HardwareInfo:
    import psutil

    env = os.environ if env is None else env
    memory = psutil.virtual_memory()
    return HardwareInfo(
        cpu=cpu_name(),
        num_cores=psutil.cpu_count(logical=False) or os.cpu_count() or 1,
        total_memory=memory.total,
        available_memory=memory.available,
        gpus=detect_gpus(),
        ollama=detect_ollama(env) if probe_ollama else None,
        cpu_bf16=has_native_bf16(),
    )
