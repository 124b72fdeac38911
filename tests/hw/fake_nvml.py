"""A stand-in for the `pynvml` module with two GPUs, for the formatting of what NVML reports (the real
library runs in tests/hw/test_detect.py: its no-driver path here, its driver path on GPU machines)."""

from __future__ import annotations

from types import SimpleNamespace


class NVMLError(Exception):
    pass


class FakeNVML:
    """H100 with NVLink, MIG off, ECC on and one process; an old T4 that supports few queries."""

    NVMLError = NVMLError
    NVML_CLOCK_SM, NVML_CLOCK_MEM = 1, 2
    NVML_NVLINK_MAX_LINKS = 18
    NVML_FEATURE_ENABLED = 1

    def __init__(self, fail_init: bool = False) -> None:
        self.fail_init = fail_init
        self.initialised = False

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise NVMLError("Driver Not Loaded")
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return 12040

    def nvmlSystemGetNVMLVersion(self) -> bytes:
        return b"12.550.54.15"  # older pynvml returned bytes

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, h: int) -> str:
        return ("NVIDIA H100 80GB HBM3", "Tesla T4")[h]

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return f"GPU-{h:04d}"

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        total = (80 << 30, 16 << 30)[h]
        used = (6 << 30, 0)[h]
        return SimpleNamespace(total=total, free=total - used, used=used)

    def nvmlDeviceGetCudaComputeCapability(self, h: int) -> tuple[int, int]:
        return ((9, 0), (7, 5))[h]

    def _h100(self, h: int, value):  # noqa: ANN001, ANN202
        if h != 0:
            raise NVMLError("Not Supported")
        return value

    def nvmlDeviceGetPowerManagementLimit(self, h: int) -> int:
        return (700_000, 70_000)[h]

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return self._h100(h, 123_456)

    def nvmlDeviceGetClockInfo(self, h: int, kind: int) -> int:
        return self._h100(h, {1: 1755, 2: 2619}[kind])

    def nvmlDeviceGetMaxClockInfo(self, h: int, kind: int) -> int:
        return {1: (1980, 1590)[h], 2: (2619, 5001)[h]}[kind]

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h: int) -> int:
        return (5, 1)[h]

    def nvmlDeviceGetCurrPcieLinkWidth(self, h: int) -> int:
        return 16

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: int) -> int:
        return (5, 3)[h]

    def nvmlDeviceGetMaxPcieLinkWidth(self, h: int) -> int:
        return 16

    def nvmlDeviceGetNvLinkState(self, h: int, link: int) -> int:
        if h != 0:
            raise NVMLError("Not Supported")
        return 1 if link < 16 else 0

    def nvmlDeviceGetMigMode(self, h: int) -> tuple[int, int]:
        return self._h100(h, (0, 0))

    def nvmlDeviceGetEccMode(self, h: int) -> tuple[int, int]:
        return ((1, 1), (0, 0))[h]

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=4242, usedGpuMemory=5 << 30)] if h == 0 else []

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=4242, usedGpuMemory=5 << 30), SimpleNamespace(pid=77, usedGpuMemory=None)] \
            if h == 0 else []

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        if pid == 77:
            raise NVMLError("No Permission")
        return "python3"
