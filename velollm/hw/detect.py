"""What this machine has: CPU, memory, GPUs (NVML first, torch as fallback). Pure reads; no CUDA init on
import. Imports nothing of velollm outside velollm/hw: the commands layer adds models and servers."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from velollm.hw.cpu_features import has_native_bf16
from velollm.hw.nvml import DriverInfo, GPUInfo, GPUProcess, read_nvml

__all__ = ["DriverInfo", "GPUInfo", "GPUProcess", "HardwareInfo", "cpu_name", "detect", "detect_gpus"]


@dataclass(frozen=True)
class HardwareInfo:
    cpu: str
    num_cores: int
    total_memory: int
    available_memory: int
    gpus: tuple[GPUInfo, ...] = field(default_factory=tuple)
    cpu_bf16: bool = False  # bfloat16 dot products in hardware (AVX512-BF16 / AMX-BF16)
    driver: DriverInfo | None = None  # from NVML; None without an NVIDIA driver
    gpu_source: str = "none"  # "nvml", "torch" (no NVML, CUDA through torch) or "none"
    nvml_error: str | None = None  # why NVML was not used


def torch_gpus() -> tuple[GPUInfo, ...]:
    """GPUs as torch sees them (creates a CUDA context): the fallback when NVML is unavailable."""
    try:
        import torch
    except ImportError:
        return ()
    if not torch.cuda.is_available():
        return ()
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        free, total = torch.cuda.mem_get_info(index)
        gpus.append(GPUInfo(index, props.name, props.total_memory, (props.major, props.minor),
                            free_memory=free, used_memory=total - free))
    return tuple(gpus)


def detect_gpus(nvml: ModuleType | None = None) -> tuple[tuple[GPUInfo, ...], DriverInfo | None, str, str | None]:
    """(gpus, driver, source, nvml_error): NVML when a driver answers, else torch.cuda."""
    report = read_nvml(nvml)
    if report.error is None:
        return report.gpus, report.driver, "nvml", None
    gpus = torch_gpus()
    return gpus, None, "torch" if gpus else "none", report.error


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def detect(nvml: ModuleType | None = None) -> HardwareInfo:
    """This machine. `nvml`: the pynvml module to ask (default: the installed one, if any)."""
    import psutil

    memory = psutil.virtual_memory()
    gpus, driver, source, error = detect_gpus(nvml)
    return HardwareInfo(
        cpu=cpu_name(),
        num_cores=psutil.cpu_count(logical=False) or os.cpu_count() or 1,
        total_memory=memory.total,
        available_memory=memory.available,
        gpus=gpus,
        cpu_bf16=has_native_bf16(),
        driver=driver,
        gpu_source=source,
        nvml_error=error,
    )
