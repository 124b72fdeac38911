"""The KV room of `velollm detect` and `velollm optimize` follows the KV cache dtype: counted in fp8 where fp8 is
advised (and --max-model-len with it), with the fp8 room beside the bf16 one where the GPU has fp8 but it is not
advised, and no fp8 where the GPU lacks it. A real HF cache layout holding the demo model."""

from __future__ import annotations

import json

from rich.console import Console

from velollm.commands.detect_view import print_fits
from velollm.commands.fits import kv_budget, kv_bytes_per_token, model_fit
from velollm.commands.optimize_files import serve_script
from velollm.engine.loader.demo import write_demo
from velollm.hw.detect import GPUInfo, HardwareInfo
from velollm.hw.recommend import recommend

_GiB = 1 << 30


def _hub(tmp_path) -> tuple[dict[str, str], dict]:
    snap = tmp_path / "hub" / "models--org--tiny" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    write_demo(snap)
    env = {"OLLAMA_MODELS": str(tmp_path / "none"), "HF_HUB_CACHE": str(tmp_path / "hub"), "PATH": "/usr/bin:/bin"}
    return env, json.loads((snap / "config.json").read_text())


def _gpu(name: str, cc: tuple[int, int], free: int) -> HardwareInfo:
    return HardwareInfo("x", 16, 64 * _GiB, 60 * _GiB, (GPUInfo(0, name, 16 * _GiB, cc, free_memory=free,
                                                                used_memory=0),))


def _per_token(cfg: dict, dtype: str) -> int:
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return kv_bytes_per_token(cfg["num_hidden_layers"], cfg["num_key_value_heads"], head_dim, dtype)


def test_kv_bytes_per_token_halves_in_fp8():
    assert kv_bytes_per_token(32, 8, 128, "fp8") * 2 == kv_bytes_per_token(32, 8, 128, "bfloat16") == 131072


def test_fp8_advice_counts_the_room_in_fp8_and_lengthens_the_context(tmp_path):
    env, cfg = _hub(tmp_path)
    context = cfg["max_position_embeddings"]
    probe = model_fit("org/tiny", "hf", _gpu("RTX 4060 Ti", (8, 9), 8 * _GiB), recommend(_gpu("x", (8, 9), 0)), env)
    # Free memory for 3/4 of the model's context in bfloat16: the whole context fits only in fp8.
    free = _GiB + probe.weight_bytes + _per_token(cfg, "bfloat16") * context * 3 // 4
    ada, ampere = _gpu("RTX 4060 Ti", (8, 9), free), _gpu("RTX A4000", (8, 6), free)
    assert recommend(ada).kv_cache_dtype == "fp8" and recommend(ampere).kv_cache_dtype == "auto"
    on_ada = model_fit("org/tiny", "hf", ada, recommend(ada), env)
    on_ampere = model_fit("org/tiny", "hf", ampere, recommend(ampere), env)
    budget = kv_budget(ada, recommend(ada), on_ada.weight_bytes)
    assert on_ada.kv_cache_dtype == "fp8" and on_ada.kv_tokens == budget // _per_token(cfg, "fp8")
    assert on_ampere.kv_cache_dtype == "bfloat16" and on_ampere.kv_tokens == budget // _per_token(cfg, "bfloat16")
    assert on_ada.kv_tokens >= 2 * on_ampere.kv_tokens - 1
    assert on_ada.max_model_len == context and "--kv-cache-dtype fp8" in on_ada.serve_flags
    assert on_ampere.max_model_len == on_ampere.kv_tokens < context
    assert f"--max-model-len {context} " in on_ada.serve_flags
    assert on_ada.kv_tokens_fp8 == on_ampere.kv_tokens_fp8 == 0  # already fp8; no fp8 before sm_89
    script = serve_script(recommend(ada), [on_ada], "org/tiny", "test")
    assert "fp8 KV cache" in script and f"--max-model-len {context}:" in script


def test_a_roomy_fp8_gpu_shows_the_fp8_room_beside_the_advised_one(tmp_path):
    env, cfg = _hub(tmp_path)
    h100 = HardwareInfo("x", 32, 256 * _GiB, 200 * _GiB, (GPUInfo(0, "H100", 80 * _GiB, (9, 0), used_memory=0),))
    rec = recommend(h100)
    assert rec.kv_cache_dtype == "auto" and rec.fp8_kv_cache  # roomy: not advised, but there
    fit = model_fit("org/tiny", "hf", h100, rec, env)
    assert fit.kv_cache_dtype == "bfloat16" and fit.kv_tokens_fp8 == kv_budget(h100, rec, fit.weight_bytes) // \
        _per_token(cfg, "fp8")
    console = Console(width=400, record=True)
    print_fits(console, [fit])
    assert f"--kv-cache-dtype fp8: {fit.kv_tokens_fp8:,} tokens" in console.export_text()
    assert f"with --kv-cache-dtype fp8: {fit.kv_tokens_fp8:,} tokens" in serve_script(rec, [fit], "org/tiny", "t")
    cpu = HardwareInfo("x", 4, 32 * _GiB, 16 * _GiB)
    on_cpu = model_fit("org/tiny", "hf", cpu, recommend(cpu), env)
    assert on_cpu.kv_tokens_fp8 == 0 and on_cpu.kv_cache_dtype == on_cpu.precision
