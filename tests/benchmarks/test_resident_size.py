"""benchmarks/resident_size.py prints, per shape, the loader's resident sizes in the order the int4 path promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "resident_size.py"


def test_rows_for_every_shape_in_order_of_size():
    out = subprocess.run([sys.executable, str(SCRIPT), "--shapes", "llama-3.2-1b", "llama-3.1-8b"],
                         capture_output=True, text=True, timeout=120, check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["shape"] for r in rows] == ["llama-3.2-1b", "llama-3.1-8b"]
    for r in rows:
        assert r["file_tensors_gb"] < r["int4_bfloat16_gb"] < r["none_bfloat16_gb"] < r["none_float32_gb"]
        assert r["int4_bfloat16_gb"] < r["int4_float32_gb"] < r["none_float32_gb"]
        assert abs(r["none_float32_gb"] - 2 * r["none_bfloat16_gb"]) < 0.02  # every weight 4 bytes against 2
