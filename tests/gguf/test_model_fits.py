"""`velollm detect`'s table of what fits: models in a real Ollama store layout and a real HF cache layout."""

from __future__ import annotations

import json
import subprocess
import sys

from velollm.commands.fits import kv_bytes_per_token, model_fit, model_fits
from velollm.engine.loader.demo import write_demo
from velollm.hw.detect import GPUInfo, HardwareInfo
from velollm.hw.recommend import recommend

from .test_ollama_store import make_store


def _env(tmp_path, fixtures):
    store = tmp_path / "models"
    make_store(store, fixtures.model("llama", "Q8_0").path)
    snap = tmp_path / "hub" / "models--org--tiny" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    write_demo(snap)
    (tmp_path / "hub" / "models--org--tokenizer-only" / "snapshots" / "def").mkdir(parents=True)
    return {"OLLAMA_MODELS": str(store), "HF_HUB_CACHE": str(tmp_path / "hub"), "PATH": "/usr/bin:/bin"}


def test_fits_on_cpu_and_gpu(tmp_path, fixtures):
    env = _env(tmp_path, fixtures)
    hw = HardwareInfo("x", 4, 32 << 30, 16 << 30, cpu_bf16=True)
    rec = recommend(hw)
    fits = {f.name: f for f in model_fits(hw, rec, env)}
    assert set(fits) == {"tiny:latest", "org/tiny", "org/tokenizer-only"}
    tiny = fits["tiny:latest"]
    assert tiny.native and tiny.source == "ollama" and tiny.stored == "Q8_0" and tiny.precision == "bfloat16"
    per_token = kv_bytes_per_token(2, 2, 64, "bfloat16")  # the llama fixture: 2 layers, 2 KV heads of 64
    assert tiny.kv_tokens == (rec.kv_cache_memory // per_token)
    assert tiny.max_model_len == tiny.context_length  # a tiny model: its whole context fits
    assert tiny.full_contexts == tiny.kv_tokens // tiny.context_length
    assert tiny.serve_flags.startswith(f"--model tiny:latest --max-model-len {tiny.context_length} --device cpu")
    assert fits["org/tiny"].native and fits["org/tiny"].source == "hf"
    assert not fits["org/tokenizer-only"].native and "config.json" in fits["org/tokenizer-only"].reason
    # A GPU whose memory is nearly all taken by others: nothing fits, and the row says why.
    full = HardwareInfo("x", 4, 32 << 30, 16 << 30,
                        (GPUInfo(0, "T4", 16 << 30, (7, 5), free_memory=1 << 30, used_memory=15 << 30),))
    fit = model_fit("org/tiny", "hf", full, recommend(full), env)  # (a GGUF's resolution would ask CUDA)
    assert not fit.native and fit.reason.startswith("does not fit") and fit.kv_tokens == 0


def test_detect_command_lists_models(tmp_path, fixtures):
    env = _env(tmp_path, fixtures)
    out = subprocess.run([sys.executable, "-m", "velollm.cli", "detect", "--json", "--no-ollama"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    models = {m["name"]: m for m in json.loads(out.stdout)["models"]}
    assert models["tiny:latest"]["native"] and models["tiny:latest"]["kv_tokens"] > 0
    assert models["tiny:latest"]["full_contexts"] >= 1
    table = subprocess.run([sys.executable, "-m", "velollm.cli", "detect", "--no-ollama"],
                           capture_output=True, text=True, timeout=120, env={**env, "COLUMNS": "250"})
    assert table.returncode == 0, table.stderr
    assert "What fits on this machine" in table.stdout and "tiny:latest" in table.stdout
    assert "velollm serve --model tiny:latest" in table.stdout
