"""`velollm detect` as rich tables: the machine, its GPUs, and the models that fit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from velollm.hw.nvml import GPUInfo

if TYPE_CHECKING:
    from rich.console import Console

    from velollm.commands.fits import ModelFit
    from velollm.commands.ollama_info import OllamaInfo
    from velollm.hw.detect import HardwareInfo
    from velollm.hw.recommend import Recommendation

_GiB = 1 << 30
_NA = "-"


def gib(n: int | None) -> str:
    return _NA if n is None else f"{n / _GiB:.1f} GiB"


def _of(now: float | None, most: float | None, unit: str) -> str:
    if now is None and most is None:
        return _NA
    if most is None:
        return f"{now:g} {unit}"
    return f"{_NA if now is None else f'{now:g}'} / {most:g} {unit}"


def _flag(value: bool | None) -> str:
    return _NA if value is None else ("on" if value else "off")


def gpu_rows(gpu: GPUInfo) -> list[tuple[str, str]]:
    """(field, value) lines for one GPU; '-' where the driver did not report the value."""
    rows = [
        ("name", f"{gpu.name} (sm_{gpu.compute_capability[0]}{gpu.compute_capability[1]})"),
        ("memory", f"{gib(gpu.total_memory)} total, {gib(gpu.free_memory)} free, {gib(gpu.used_memory)} used"),
        ("power", _power(gpu)),
        ("SM clock", _of(gpu.sm_clock_mhz, gpu.max_sm_clock_mhz, "MHz")),
        ("memory clock", _of(gpu.memory_clock_mhz, gpu.max_memory_clock_mhz, "MHz")),
        ("PCIe", _pcie(gpu)),
        ("NVLink", _NA if gpu.nvlink_active is None else f"{gpu.nvlink_active} links active"),
        ("MIG", _flag(gpu.mig_enabled)),
        ("ECC", _flag(gpu.ecc_enabled)),
    ]
    for p in gpu.processes:
        rows.append(("process", f"{p.pid} {p.name}: {gib(p.used_memory)}"))
    return rows


def _power(gpu: GPUInfo) -> str:
    now = f"{gpu.power_draw_w:.0f} W now" if gpu.power_draw_w is not None else ""
    limit = f"limit {gpu.power_limit_w:.0f} W" if gpu.power_limit_w is not None else ""
    return ", ".join(p for p in (now, limit) if p) or _NA


def _pcie(gpu: GPUInfo) -> str:
    if gpu.pcie_generation is None and gpu.max_pcie_generation is None:
        return _NA
    now = f"gen {gpu.pcie_generation or '?'} x{gpu.pcie_width or '?'}"
    most = f"gen {gpu.max_pcie_generation or '?'} x{gpu.max_pcie_width or '?'}"
    return now if now == most else f"{now} now, {most} max"


def print_machine(console: Console, hw: HardwareInfo, rec: Recommendation, ollama: OllamaInfo | None) -> None:
    from rich.table import Table

    table = Table(title="velollm detect", show_header=False)
    table.add_row("CPU", f"{hw.cpu} ({hw.num_cores} cores{', bfloat16 in hardware' if hw.cpu_bf16 else ''})")
    table.add_row("memory", f"{gib(hw.total_memory)} ({gib(hw.available_memory)} free)")
    if hw.driver is not None:
        table.add_row("NVIDIA driver", f"{hw.driver.driver_version}, CUDA {hw.driver.cuda_version}")
    elif hw.nvml_error:
        table.add_row("NVIDIA driver", f"none ({hw.nvml_error})")
    if not hw.gpus:
        table.add_row("GPU", "none (CUDA not available)")
    for gpu in hw.gpus:
        for i, (key, value) in enumerate(gpu_rows(gpu)):
            table.add_row(f"GPU {gpu.index}" if i == 0 else "", f"{key}: {value}")
    if hw.gpus:
        table.add_row("read through", "NVML" if hw.gpu_source == "nvml" else "torch.cuda (NVML unavailable)")
    if ollama is not None:
        table.add_row("Ollama store", f"{ollama.store} ({ollama.num_models} models)")
        server = (f"version {ollama.server_version}" if ollama.server_version
                  else "not answering" if ollama.probed else "not asked (--no-ollama)")
        table.add_row("Ollama server", f"{ollama.host}: {server}")
    table.add_row("suggested", f"velollm serve {rec.serve_flags()}")
    for note in rec.notes:
        table.add_row("", note)
    console.print(table)


def print_fits(console: Console, fits: list[ModelFit]) -> None:
    from rich.table import Table

    if not fits:
        console.print("no models in the Ollama store or the Hugging Face cache")
        return
    table = Table(title="What fits on this machine")
    for column in ("MODEL", "FROM", "NATIVE", "PRECISION", "WEIGHTS", "KV ROOM", "SERVE WITH"):
        table.add_column(column, overflow="fold")
    for f in fits:
        if not f.native:
            table.add_row(f.name, f.source, f"no: {f.reason}", _precision(f), gib(f.weight_bytes) if f.weight_bytes
                          else _NA, _NA, "the upstream (Ollama) serves it")
            continue
        room = f"{f.kv_tokens:,} tokens = {f.full_contexts} x {f.max_model_len:,}"
        if f.max_model_len < f.context_length:
            room += f" (model: {f.context_length:,})"
        room += kv_room_note(f)
        table.add_row(f.name, f.source, "yes", _precision(f), gib(f.weight_bytes), room, f"velollm serve {f.serve_flags}")
    console.print(table)


def kv_room_note(f: ModelFit) -> str:
    """What the KV room is counted in when it is not the model's dtype, or what fp8 would hold where it could."""
    if f.kv_cache_dtype == "fp8":
        return ", fp8 KV cache"
    if f.kv_tokens_fp8:
        return f"; --kv-cache-dtype fp8: {f.kv_tokens_fp8:,} tokens"
    return ""


def _precision(f: ModelFit) -> str:
    if not f.precision:
        return _NA
    return f"{f.stored} -> {f.precision}" if f.stored and f.stored.lower() != f.precision.lower() else f.precision
