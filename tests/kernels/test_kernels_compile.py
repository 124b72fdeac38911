"""Every Triton kernel compiles for sm_90 (bf16), checked on CPU machines with triton's bundled ptxas."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]


def _has_nvidia_backend() -> bool:
    from triton.backends import backends

    return "nvidia" in backends


@pytest.mark.skipif(not _has_nvidia_backend(), reason="triton without its NVIDIA backend")
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the kernel tests compile and run the real thing")
def test_all_kernels_compile_for_hopper():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silences triton 3.9's notice; fusion is the default
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("compile_sm90.py"))],
                            capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    # 13 float kernels (2 prefill tiles, 3 decode, 2 silu_mul_gemv) + 31 quantized (3 per GGUF type, 2 GEMV
    # variants of Q4_K) + 6 over an fp8 KV cache (rope, decode, prefill; sm_90 and sm_89)
    assert result.stdout.count("ok   ") == 50
