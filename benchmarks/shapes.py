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


def write_tokenizer(folder: Path, vocab_size: int) -> None:
    """The demo tokenizer (byte-level BPE, its chat template) with its vocabulary filled up to `vocab_size`:
    the ids past the demo's ~1k are plain tokens " w<id>" (no merges produce them), so every id the random
    model samples decodes to text and a streamed answer sends one chunk per token, as with a real tokenizer."""
    import json
    import shutil

    from velollm.engine.loader.demo import ensure_demo

    target = folder / "tokenizer.json"
    if target.exists():
        tok = json.loads(target.read_text())
        if len(tok["model"]["vocab"]) >= vocab_size:
            return
    demo = ensure_demo(folder.parent / "demo")
    tok = json.loads((demo / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    # The special tokens join the model's vocabulary at their ids: tokenizers gives an added token that the
    # model lacks the next id after the model's vocabulary, which would move them to the end.
    vocab.update({t["content"]: t["id"] for t in tok["added_tokens"]})
    taken = set(vocab.values())
    vocab.update({f"\u0120w{i}": i for i in range(vocab_size) if i not in taken})
    tmp = target.with_name(f"tokenizer.json.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(tok, ensure_ascii=False))
    tmp.rename(target)
    shutil.copy(demo / "tokenizer_config.json", folder / "tokenizer_config.json")


def save_random_model(shape: str, folder: Path, dtype: torch.dtype, num_layers: int | None = None) -> Path:
    """Write config.json + safetensors of random weights, plus a tokenizer covering the whole vocabulary
    (write_tokenizer; ids are random anyway). `num_layers`: only that many of the shape's layers (the folder
    name should say so: the folder is reused as it is when its config.json exists)."""
    import shutil

    from transformers import LlamaConfig, LlamaForCausalLM

    if (folder / "config.json").exists():
        write_tokenizer(folder, SHAPES[shape]["vocab_size"])  # folders written before the full vocabulary
        return folder
    # Written beside the target and renamed into place: a run killed mid-write, or another benchmark
    # writing the same shape at the same time, never leaves a folder with config.json but no weights.
    final, folder = folder, folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    cfg = LlamaConfig(max_position_embeddings=8192, bos_token_id=0, eos_token_id=1,
                      **{**SHAPES[shape], **({"num_hidden_layers": num_layers} if num_layers else {})})
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
    write_tokenizer(folder, SHAPES[shape]["vocab_size"])
    try:
        folder.rename(final)
    except OSError:  # another process finished first
        shutil.rmtree(folder, ignore_errors=True)
    return final


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
