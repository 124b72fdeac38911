"""NVIDIA GPUs through NVML (the `nvidia-ml-py` package, module `pynvml`): what the driver knows.

NVML answers without creating a CUDA context: free memory as the driver counts it (other processes
included), power, clocks, PCIe link, NVLink, MIG and ECC modes, and the processes holding memory.
Every query that a GPU or driver may not support is optional: `None` means "not reported".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class GPUProcess:
    pid: int
    name: str
    used_memory: int | None  # bytes; None where the driver does not say (e.g. without permission)


@dataclass(frozen=True)
class GPUInfo:
    index: int
    name: str
    total_memory: int  # bytes
    compute_capability: tuple[int, int]
    free_memory: int | None = None
    used_memory: int | None = None
    uuid: str | None = None
    power_limit_w: float | None = None
    power_draw_w: float | None = None
    sm_clock_mhz: int | None = None
    max_sm_clock_mhz: int | None = None
    memory_clock_mhz: int | None = None
    max_memory_clock_mhz: int | None = None
    pcie_generation: int | None = None  # current link (it drops at idle to save power)
    pcie_width: int | None = None
    max_pcie_generation: int | None = None
    max_pcie_width: int | None = None
    nvlink_active: int | None = None  # active NVLink links; None: no NVLink on this GPU
    mig_enabled: bool | None = None
    ecc_enabled: bool | None = None
    processes: tuple[GPUProcess, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class DriverInfo:
    driver_version: str
    cuda_version: str  # the newest CUDA the driver supports, "12.4"
    nvml_version: str | None = None


@dataclass(frozen=True)
class NVMLReport:
    """What NVML said, or why it could not be asked (`error`; then `driver` is None and `gpus` empty)."""

    driver: DriverInfo | None
    gpus: tuple[GPUInfo, ...]
    error: str | None = None


def load_pynvml() -> ModuleType | None:
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def read_nvml(nvml: ModuleType | None = None) -> NVMLReport:
    """Query every GPU the driver sees. Without the library or a driver, an empty report with the reason."""
    nvml = load_pynvml() if nvml is None else nvml
    if nvml is None:
        return NVMLReport(None, (), "nvidia-ml-py is not installed")
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:  # no libnvidia-ml.so (no driver), or the driver is not loaded
        return NVMLReport(None, (), f"NVML: {exc}")
    try:
        driver = DriverInfo(_text(nvml.nvmlSystemGetDriverVersion()),
                            cuda_version(nvml.nvmlSystemGetCudaDriverVersion_v2()),
                            _optional(nvml, lambda: _text(nvml.nvmlSystemGetNVMLVersion())))
        gpus = tuple(_gpu(nvml, index) for index in range(nvml.nvmlDeviceGetCount()))
        return NVMLReport(driver, gpus)
    except nvml.NVMLError as exc:
        return NVMLReport(None, (), f"NVML: {exc}")
    finally:
        nvml.nvmlShutdown()


def cuda_version(code: int) -> str:
    """NVML's integer CUDA version (12040) as CUDA writes it ("12.4")."""
    return f"{code // 1000}.{code % 1000 // 10}"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value  # older pynvml returned bytes


def _optional(nvml: ModuleType, query: Callable[[], T]) -> T | None:
    try:
        return query()
    except nvml.NVMLError:  # "Not Supported" on this GPU / driver, or no permission
        return None


def _gpu(nvml: ModuleType, index: int) -> GPUInfo:
    h = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = nvml.nvmlDeviceGetMemoryInfo(h)

    def opt(query: Callable[[], T]) -> T | None:
        return _optional(nvml, query)

    mig = opt(lambda: nvml.nvmlDeviceGetMigMode(h))
    ecc = opt(lambda: nvml.nvmlDeviceGetEccMode(h))
    power_limit = opt(lambda: nvml.nvmlDeviceGetPowerManagementLimit(h))
    power_draw = opt(lambda: nvml.nvmlDeviceGetPowerUsage(h))
    return GPUInfo(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(h)),
        total_memory=int(memory.total),
        compute_capability=tuple(nvml.nvmlDeviceGetCudaComputeCapability(h)),  # type: ignore[arg-type]
        free_memory=int(memory.free),
        used_memory=int(memory.used),
        uuid=opt(lambda: _text(nvml.nvmlDeviceGetUUID(h))),
        power_limit_w=power_limit / 1000 if power_limit is not None else None,  # NVML speaks milliwatts
        power_draw_w=power_draw / 1000 if power_draw is not None else None,
        sm_clock_mhz=opt(lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM)),
        max_sm_clock_mhz=opt(lambda: nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_SM)),
        memory_clock_mhz=opt(lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM)),
        max_memory_clock_mhz=opt(lambda: nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_MEM)),
        pcie_generation=opt(lambda: nvml.nvmlDeviceGetCurrPcieLinkGeneration(h)),
        pcie_width=opt(lambda: nvml.nvmlDeviceGetCurrPcieLinkWidth(h)),
        max_pcie_generation=opt(lambda: nvml.nvmlDeviceGetMaxPcieLinkGeneration(h)),
        max_pcie_width=opt(lambda: nvml.nvmlDeviceGetMaxPcieLinkWidth(h)),
        nvlink_active=_nvlinks(nvml, h),
        mig_enabled=bool(mig[0]) if mig is not None else None,  # (current, pending)
        ecc_enabled=bool(ecc[0]) if ecc is not None else None,
        processes=_processes(nvml, h),
    )


def _nvlinks(nvml: ModuleType, handle: Any) -> int | None:
    """Active links; None when the GPU has none (the first link's query is "Not Supported")."""
    states = []
    for link in range(nvml.NVML_NVLINK_MAX_LINKS):
        state = _optional(nvml, lambda link=link: nvml.nvmlDeviceGetNvLinkState(handle, link))
        if state is None:
            break
        states.append(state)
    return sum(1 for s in states if s == nvml.NVML_FEATURE_ENABLED) if states else None


def _processes(nvml: ModuleType, handle: Any) -> tuple[GPUProcess, ...]:
    found: dict[int, GPUProcess] = {}
    for query in (nvml.nvmlDeviceGetComputeRunningProcesses, nvml.nvmlDeviceGetGraphicsRunningProcesses):
        for p in _optional(nvml, lambda query=query: query(handle)) or ():
            used = getattr(p, "usedGpuMemory", None)
            name = _optional(nvml, lambda p=p: _text(nvml.nvmlSystemGetProcessName(p.pid))) or "?"
            found.setdefault(int(p.pid), GPUProcess(int(p.pid), name, int(used) if used is not None else None))
    return tuple(found.values())
