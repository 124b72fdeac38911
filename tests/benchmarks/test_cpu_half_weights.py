"""benchmarks/cpu_half_weights.py on a one-layer Llama-3.2-1B shape: a row per matrix and weight dtype, a decode row
per variant, and the 16-bit variants hold the dense matrices in 2 bytes (the float32 path's in 4)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cpu_half_weights.py"


def test_smoke_run_rows(tmp_path: Path):
    pytest.importorskip("llama_cpp")  # the script quantizes its Q4_K_M file with llama.cpp
    out = subprocess.run([sys.executable, str(SCRIPT), "--layers", "1", "--vocab", "4096", "--new-tokens", "2",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    variants = ["float32", "bfloat16", "float16", "float16_large"]
    gemv = [(r["matrix"], r["weights"]) for r in rows if r["what"] == "half_gemv"]
    assert gemv == [(m, v) for m in ("4096x2048", "2048x8192", "512x2048") for v in variants]
    decode = {r["weights"]: r for r in rows if r["what"] == "half_decode"}
    assert list(decode) == variants and decode["float32"]["float32_step_over_this"] == 1.0
    dense, half = decode["float32"]["linear_weights_gb"], decode["float16"]["linear_weights_gb"]
    assert decode["bfloat16"]["linear_weights_gb"] == half < decode["float16_large"]["linear_weights_gb"] < dense
    # one layer: the Q6_K lm_head (4096x2048) and ffn_down (2048x8192) go from 4 bytes to 2, Q4_K stays int4
    assert dense - half == pytest.approx((4096 * 2048 + 2048 * 8192 + 512 * 2048) * 2 / 1e9, abs=2e-3)
