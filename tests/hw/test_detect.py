"""Hardware detection (NVML, torch fallback), recommendations, and the `detect` command."""

from __future__ import annotations

import ctypes.util
import json
import subprocess
import sys

import pytest
import torch

from velollm.hw import nvml as nvml_mod
from velollm.hw.detect import GPUInfo, HardwareInfo, detect
from velollm.hw.recommend import recommend

from .fake_nvml import FakeNVML


def _has_nvml_library() -> bool:
    return ctypes.util.find_library("nvidia-ml") is not None


def test_detect_reads_this_machine():
    """The real NVML library: on a machine without an NVIDIA driver (this one, CI) the report says why and
    the GPUs come from torch; with a driver, NVML reports the driver and every GPU torch sees."""
    hw = detect()
    assert hw.num_cores >= 1 and hw.total_memory >= hw.available_memory > 0
    if not _has_nvml_library():
        assert hw.driver is None and "NVML" in (hw.nvml_error or "")
        assert hw.gpu_source == ("torch" if torch.cuda.is_available() else "none")
        assert len(hw.gpus) == torch.cuda.device_count()
    else:
        assert hw.gpu_source == "nvml" and hw.nvml_error is None
        assert hw.driver is not None and hw.driver.cuda_version.count(".") == 1
        assert len(hw.gpus) >= torch.cuda.device_count()
        assert all(g.free_memory is not None and 0 < g.total_memory for g in hw.gpus)


def test_without_the_library_or_driver_falls_back_to_torch():
    report = nvml_mod.read_nvml(FakeNVML(fail_init=True))
    assert report.driver is None and report.gpus == () and report.error == "NVML: Driver Not Loaded"
    hw = detect(FakeNVML(fail_init=True))
    assert hw.nvml_error == "NVML: Driver Not Loaded" and len(hw.gpus) == torch.cuda.device_count()


def test_nvml_report_fields():
    fake = FakeNVML()
    report = nvml_mod.read_nvml(fake)
    assert not fake.initialised  # shut down after reading
    assert report.error is None and report.driver.driver_version == "550.54.15"
    assert report.driver.cuda_version == "12.4" and report.driver.nvml_version == "12.550.54.15"
    h100, t4 = report.gpus
    assert (h100.name, h100.compute_capability, h100.total_memory, h100.used_memory) == \
        ("NVIDIA H100 80GB HBM3", (9, 0), 80 << 30, 6 << 30)
    assert h100.power_limit_w == 700.0 and h100.power_draw_w == pytest.approx(123.456)
    assert (h100.sm_clock_mhz, h100.max_sm_clock_mhz, h100.pcie_generation, h100.pcie_width) == (1755, 1980, 5, 16)
    assert h100.nvlink_active == 16 and h100.mig_enabled is False and h100.ecc_enabled is True
    # one process listed once (compute and graphics), another whose name NVML would not give
    assert [(p.pid, p.name, p.used_memory) for p in h100.processes] == [(4242, "python3", 5 << 30), (77, "?", None)]
    # the T4 supports fewer queries: those are None, not errors
    assert t4.power_draw_w is None and t4.sm_clock_mhz is None and t4.max_sm_clock_mhz == 1590
    assert t4.nvlink_active is None and t4.mig_enabled is None and t4.ecc_enabled is False
    assert nvml_mod.cuda_version(11080) == "11.8" and nvml_mod.cuda_version(12000) == "12.0"


def test_gpu_rows_formatting():
    from velollm.commands.detect_view import gpu_rows

    h100, t4 = nvml_mod.read_nvml(FakeNVML()).gpus
    rows = dict(gpu_rows(h100))
    assert rows["memory"] == "80.0 GiB total, 74.0 GiB free, 6.0 GiB used"
    assert rows["power"] == "123 W now, limit 700 W" and rows["SM clock"] == "1755 / 1980 MHz"
    assert rows["PCIe"] == "gen 5 x16" and rows["NVLink"] == "16 links active"
    assert rows["MIG"] == "off" and rows["ECC"] == "on" and rows["name"] == "NVIDIA H100 80GB HBM3 (sm_90)"
    assert [v for k, v in gpu_rows(h100) if k == "process"] == ["4242 python3: 5.0 GiB", "77 ?: -"]
    rows = dict(gpu_rows(t4))
    assert rows["power"] == "limit 70 W" and rows["SM clock"] == "- / 1590 MHz"
    assert rows["PCIe"] == "gen 1 x16 now, gen 3 x16 max" and rows["NVLink"] == "-" and rows["MIG"] == "-"


def test_recommendations():
    cpu = HardwareInfo("x", 2, 24 << 30, 20 << 30)
    rec = recommend(cpu)
    assert rec.device == "cpu" and rec.kv_cache_memory == 5 << 30
    assert "--kv-cache-memory 5120MiB" in rec.serve_flags() and rec.dtype == "float32"
    assert all(s.reason for s in rec.settings)
    assert recommend(HardwareInfo("x", 2, 24 << 30, 20 << 30, cpu_bf16=True)).dtype == "bfloat16"
    old = HardwareInfo("x", 16, 64 << 30, 60 << 30, (GPUInfo(0, "T4", 16 << 30, (7, 5)),))
    assert recommend(old).dtype == "float16" and recommend(old).kv_cache_memory is None
    assert "--max-num-seqs 128" in recommend(old).serve_flags()
    new = HardwareInfo("x", 16, 64 << 30, 60 << 30, (GPUInfo(0, "H100", 80 << 30, (9, 0), used_memory=0),))
    assert recommend(new).dtype == "bfloat16" and recommend(new).gpu_memory_utilization == 0.9
    # 20 GiB held by another process: the utilization leaves it to them
    shared = HardwareInfo("x", 16, 64 << 30, 60 << 30, (GPUInfo(0, "H100", 80 << 30, (9, 0), used_memory=20 << 30),))
    assert recommend(shared).gpu_memory_utilization == 0.65
    assert "20.0 GiB" in {s.name: s.reason for s in recommend(shared).settings}["--gpu-memory-utilization"]
    # A tight GPU that converts e4m3 natively gets the fp8 KV cache; a tight older one and a roomy one do not.
    ada = HardwareInfo("x", 16, 64 << 30, 60 << 30, (GPUInfo(0, "RTX 4060 Ti", 16 << 30, (8, 9)),))
    assert "--kv-cache-dtype fp8" in recommend(ada).serve_flags()
    assert "--kv-cache-dtype" not in recommend(old).serve_flags() + recommend(new).serve_flags()


def test_ollama_settings():
    from velollm.hw.ollama_env import ollama_settings

    big = {s.name: s for s in ollama_settings(HardwareInfo("x", 16, 64 << 30, 60 << 30,
                                                           (GPUInfo(0, "H100", 80 << 30, (9, 0)),)))}
    assert [big[k].value for k in ("OLLAMA_NUM_PARALLEL", "OLLAMA_MAX_LOADED_MODELS", "OLLAMA_FLASH_ATTENTION",
                                   "OLLAMA_KV_CACHE_TYPE", "OLLAMA_KEEP_ALIVE")] == ["8", "2", "1", "f16", "30m"]
    small = {s.name: s for s in ollama_settings(HardwareInfo("x", 2, 16 << 30, 12 << 30))}
    assert [small[k].value for k in ("OLLAMA_NUM_PARALLEL", "OLLAMA_MAX_LOADED_MODELS", "OLLAMA_KV_CACHE_TYPE",
                                     "OLLAMA_KEEP_ALIVE")] == ["1", "1", "q8_0", "5m"]
    pascal = {s.name: s for s in ollama_settings(HardwareInfo("x", 8, 32 << 30, 30 << 30,
                                                              (GPUInfo(0, "P100", 16 << 30, (6, 0)),)))}
    assert pascal["OLLAMA_FLASH_ATTENTION"].value == "0" and "OLLAMA_KV_CACHE_TYPE" not in pascal
    assert all(s.reason for s in (*big.values(), *small.values()))


def test_detect_command_json(tmp_path):
    env = {"OLLAMA_MODELS": str(tmp_path / "store"), "HF_HUB_CACHE": str(tmp_path / "hub"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "velollm.cli", "detect", "--json", "--no-ollama"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    hw = data["hardware"]
    assert data["recommendation"]["device"] == ("cuda" if hw["gpus"] else "cpu")
    assert hw["gpu_source"] == ("nvml" if _has_nvml_library() else "torch" if hw["gpus"] else "none")
    assert hw["num_cores"] >= 1 and data["models"] == [] and data["ollama"]["probed"] is False
    table = subprocess.run([sys.executable, "-m", "velollm.cli", "detect", "--no-ollama"],
                           capture_output=True, text=True, timeout=60, env={**env, "COLUMNS": "200"})
    assert "suggested" in table.stdout and "no models in the Ollama store" in table.stdout
    if not _has_nvml_library():
        assert "NVML Shared Library Not Found" in table.stdout


def test_cpu_flags_and_default_dtype(monkeypatch):
    from velollm.engine.device import resolve_dtype
    from velollm.engine.loader.gguf import default_dtype
    from velollm.hw import cpu_features

    zen4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512vl\n"
    old = "processor\t: 0\nflags\t\t: fpu sse avx2 fma\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd bf16\n"
    assert cpu_features.has_native_bf16(cpu_features.parse_cpu_flags(zen4))
    assert not cpu_features.has_native_bf16(cpu_features.parse_cpu_flags(old))
    assert not cpu_features.has_native_bf16(cpu_features.parse_cpu_flags(arm))  # no torch fast path assumed
    assert cpu_features.parse_cpu_flags("") == frozenset()
    cpu = torch.device("cpu")
    for flags, want in ((zen4, "bfloat16"), (old, "float32")):
        monkeypatch.setattr(cpu_features, "cpu_flags", lambda flags=flags: cpu_features.parse_cpu_flags(flags))
        assert default_dtype("cpu") == want and resolve_dtype("auto", "float16", cpu) == want
        assert default_dtype("cuda") == "bfloat16"
        # Checkpoints stored in bfloat16 or float32 run as stored; an explicit dtype always wins.
        assert resolve_dtype("auto", "float32", cpu) == "float32" and resolve_dtype("auto", "bfloat16", cpu) == "bfloat16"
        assert resolve_dtype("float32", "bfloat16", cpu) == "float32"
