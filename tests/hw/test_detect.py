"""Hardware detection and recommendations."""

from __future__ import annotations

import json
import subprocess
import sys

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
    assert "--kv-cache-memory 5120MiB" in rec.serve_flags()
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
