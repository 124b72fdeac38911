"""Hardware detection and recommendations."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from velollm.hw.detect import GPUInfo, HardwareInfo, detect
from velollm.hw.recommend import recommend


def test_detect_reads_this_machine(tmp_path):
    hw = detect({"OLLAMA_MODELS": str(tmp_path), "OLLAMA_HOST": "127.0.0.1:9"})
    assert hw.num_cores >= 1 and hw.total_memory >= hw.available_memory > 0
    assert hw.ollama.store == tmp_path and hw.ollama.num_models == 0
    assert hw.ollama.server_version is None and hw.ollama.host == "http://127.0.0.1:9"


def test_recommendations():
    cpu = HardwareInfo("x", 2, 24 << 30, 20 << 30)
    rec = recommend(cpu)
    assert rec.device == "cpu" and rec.kv_cache_memory == 5 << 30
    assert "--kv-cache-memory 5120MiB" in rec.serve_flags() and rec.dtype == "float32"
    assert recommend(HardwareInfo("x", 2, 24 << 30, 20 << 30, cpu_bf16=True)).dtype == "bfloat16"
    old = HardwareInfo("x", 16, 64 << 30, 60 << 30, (GPUInfo(0, "T4", 16 << 30, (7, 5)),))
    assert recommend(old).dtype == "float16" and recommend(old).kv_cache_memory is None
    new = HardwareInfo("x", 16, 64 << 30, 60 << 30, (GPUInfo(0, "H100", 80 << 30, (9, 0)),))
    assert recommend(new).dtype == "bfloat16"


def test_detect_command_json(tmp_path):
    env = {"OLLAMA_MODELS": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "velollm.cli", "detect", "--json", "--no-ollama"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["recommendation"]["device"] in ("cpu", "cuda") and data["hardware"]["num_cores"] >= 1


def test_cpu_flags_and_default_dtype(monkeypatch):
    from velollm.engine.llm_engine import resolve_dtype
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
