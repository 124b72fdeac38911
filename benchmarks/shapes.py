"""Real model shapes for benchmarks: random weights saved as a Hugging Face folder (speed ignores values)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from velollm.hw.bandwidth import copy_bandwidth  # noqa: F401  (re-exported for the benchmark scripts)

SHAPES: dict[str, dict] = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, head_dim=64,
                         rope_theta=100000.0),
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, head_dim=64,
                         rope_theta=500000.0),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, head_dim=128,
                         rope_theta=500000.0),
}


def save_random_model(shape: str, folder: Path, dtype: torch.dtype) -> Path:
    """Write config.json + safetensors of random weights, plus the demo tokenizer files (ids are random anyway)."""
    import shutil

    from transformers import LlamaConfig, LlamaForCausalLM

    from velollm.engine.loader.demo import ensure_demo

    if (folder / "config.json").exists():
        return folder
    # Written beside the target and renamed into place: a run killed mid-write, or another benchmark
    # writing the same shape at the same time, never leaves a folder with config.json but no weights.
    final, folder = folder, folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    cfg = LlamaConfig(max_position_embeddings=8192, bos_token_id=0, eos_token_id=1, **SHAPES[shape])
    torch.manual_seed(0)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    # Filled on the GPU when there is one: an 8B model's normal_ takes ~a minute on CPU cores.
    model = model.to_empty(device="cuda" if torch.cuda.is_available() else "cpu").to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    model.tie_weights()
    model.save_pretrained(folder)
    del model
    demo = ensure_demo(final.parent / "demo")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(demo / name, folder / name)
    try:
        folder.rename(final)
    except OSError:  # another process finished first
        shutil.rmtree(folder, ignore_errors=True)
    return final


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
