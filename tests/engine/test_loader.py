"""Hugging Face folders: sharded safetensors, dtype choice, padded vocabularies."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from tests.greedy_agreement import assert_greedy_agrees, top_logprobs
from velollm.engine.loader.hf_folder import load_hf_folder
from velollm.engine.loader.safetensors import safetensors_files
from velollm.errors import ModelLoadError

from .conftest import BASE, TOKENIZER_VOCAB, _save_tokenizer
from .helpers import greedy, make_engine, random_prompts, run_all


@pytest.fixture(scope="module")
def sharded_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sharded")
    torch.manual_seed(3)
    model = transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(**BASE), dtype=torch.float32)
    model.save_pretrained(folder, max_shard_size="100KB")
    _save_tokenizer(folder)
    return folder


def test_sharded_checkpoint_loads_and_matches_transformers(sharded_folder):
    assert (sharded_folder / "model.safetensors.index.json").exists()
    assert len(safetensors_files(sharded_folder)) > 2
    prompt = random_prompts([20], seed=2)[0]
    [out] = run_all(make_engine(sharded_folder), [prompt], greedy(12, logprobs=2))
    model = transformers.AutoModelForCausalLM.from_pretrained(sharded_folder, dtype=torch.float32)
    ref = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=12, min_new_tokens=12,
                         output_logits=True, return_dict_in_generate=True)
    assert_greedy_agrees(out.token_ids, out.logprobs, ref.sequences[0, len(prompt):].tolist(), top_logprobs(ref.logits),
                         what="transformers")


def test_missing_shard_is_a_clear_error(sharded_folder, tmp_path):
    index = json.loads((sharded_folder / "model.safetensors.index.json").read_text())
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text((sharded_folder / "config.json").read_text())
    with pytest.raises(ModelLoadError, match="missing"):
        list(load_hf_folder(tmp_path).iter_weights())


def test_dtype_from_config_or_argument(sharded_folder):
    assert load_hf_folder(sharded_folder).config.dtype == "float32"
    source = load_hf_folder(sharded_folder, dtype="bfloat16")
    assert source.config.dtype == "bfloat16"
    assert all(t.dtype == torch.bfloat16 for _, t in source.iter_weights())


def test_ids_beyond_the_tokenizer_vocab_never_crash_detokenization(llama_folder):
    padded_id = TOKENIZER_VOCAB + 7  # in the model's embedding, unknown to the tokenizer
    engine = make_engine(llama_folder)
    [out] = run_all(engine, random_prompts([5], seed=1), greedy(3, logit_bias={padded_id: 100.0}))
    assert out.token_ids == [padded_id] * 3
    assert out.text == ""
