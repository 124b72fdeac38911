"""The built-in demo model: deterministic, quick to create, loadable by transformers, never stops early."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest
import torch

from velollm.engine.loader.demo import DEMO_NAME, ensure_demo
from velollm.engine.text.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")

FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
PROMPTS = ["Hello", "The river ran quietly past the old mill, where", "def greet(name):", "日本語 😀 ?"]


def digests(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


def test_creation_is_quick_deterministic_and_cached(tmp_path):
    start = time.perf_counter()
    first = ensure_demo(tmp_path / "a")
    assert time.perf_counter() - start < 5.0
    assert first == tmp_path / "a" / DEMO_NAME
    assert sorted(p.name for p in first.iterdir()) == FILES
    assert [p.name for p in (tmp_path / "a").iterdir()] == [DEMO_NAME]  # no temp folder left behind
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert ensure_demo(tmp_path / "a") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime  # reused, not rewritten
    assert digests(ensure_demo(tmp_path / "b")) == digests(first)


def test_concurrent_first_use_yields_one_complete_folder(tmp_path):
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_demo(tmp_path))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [tmp_path / DEMO_NAME] * 3
    assert sorted(p.name for p in (tmp_path / DEMO_NAME).iterdir()) == FILES
    assert [p.name for p in tmp_path.iterdir()] == [DEMO_NAME]


def test_config_and_tokenizer_facts(demo_folder):
    config = json.loads((demo_folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["num_key_value_heads"], config["intermediate_size"]) == (64, 2, 4, 2, 128)
    assert config["max_position_embeddings"] >= 4096 and config["tie_word_embeddings"] is False
    tok = Tokenizer.from_folder(demo_folder)
    assert 700 <= tok.vocab_size <= config["vocab_size"] and config["vocab_size"] % 64 == 0
    assert tok.eos_token_ids == {tok.token_to_id("<|eot_id|>"), tok.token_to_id("<|end_of_text|>")}
    assert set(config["eos_token_id"]) == tok.eos_token_ids
    assert tok.encode("hi")[0] == tok.bos_token_id == config["bos_token_id"]
    text = "Hello, world! The weather is fine today."
    assert tok.decode(tok.encode(text)) == text


def test_special_and_padding_rows_of_lm_head_are_zero(demo_folder):
    from safetensors.torch import load_file

    weights = load_file(demo_folder / "model.safetensors")
    tok = Tokenizer.from_folder(demo_folder)
    lm_head = weights["lm_head.weight"]
    zero = sorted(tok.special_ids) + list(range(tok.vocab_size, lm_head.shape[0]))
    assert torch.count_nonzero(lm_head[zero]) == 0
    assert torch.count_nonzero(lm_head[: min(zero)]) == min(zero) * lm_head.shape[1]
    assert torch.equal(weights["model.norm.weight"], torch.ones(64))


def test_greedy_generation_does_not_stop_early(demo_folder):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(demo_folder, dtype=torch.float32).eval()
    tok = Tokenizer.from_folder(demo_folder)
    eos = sorted(tok.eos_token_ids)
    prompts = [tok.encode(p) for p in PROMPTS] + [tok.encode_chat([{"role": "user", "content": "Hi!"}])]
    width = max(map(len, prompts))
    ids = torch.tensor([[eos[0]] * (width - len(p)) + p for p in prompts])  # left padding
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=64, do_sample=False,
                             eos_token_id=eos, pad_token_id=eos[0])[:, width:]
    normal = [i for i in range(tok.vocab_size) if not tok.is_special(i)]
    assert (logits[mask.bool()][:, normal].max(dim=-1).values > 0).all()
    assert out.shape == (len(prompts), 64)
    for row in out.tolist():
        assert all(i < tok.vocab_size and not tok.is_special(i) for i in row)  # no EOS, no padding id
        assert tok.decode(row)  # (nonsense) text
