"""Each encoder architecture, from each format, against an outside reference on the same weights:
transformers (BERT, XLM-RoBERTa), llama.cpp (GGUF bert, xlm-roberta and nomic-bert files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from velollm.embed import load_embedder
from velollm.embed.gguf_source import gguf_embedding_source
from velollm.embed.pooling import Pooling

from . import encoder_fixtures as fx
from .conftest import cosines
from .llama_cpp_embed import llama_cpp_embed


def _hf_mean(model_cls: str, folder: Path, ids: list[list[int]]) -> np.ndarray:
    import transformers

    model = getattr(transformers, model_cls).from_pretrained(folder).eval()
    out = []
    with torch.no_grad():
        for seq in ids:
            hidden = model(input_ids=torch.tensor([seq])).last_hidden_state[0]
            out.append(hidden.mean(0).numpy())
    return np.stack(out)


def test_xlm_roberta_folder_matches_transformers(tiny_xlmr_dir: Path):
    from transformers import AutoTokenizer

    embedder = load_embedder(str(tiny_xlmr_dir))
    reference_tok = AutoTokenizer.from_pretrained(tiny_xlmr_dir)
    ids = embedder.tokenize(fx.TEXTS)
    assert ids == [reference_tok(t)["input_ids"] for t in fx.TEXTS]
    expected = _hf_mean("XLMRobertaModel", tiny_xlmr_dir, ids)
    assert cosines(embedder.embed_ids(ids), expected).min() >= 0.9999
    assert embedder.max_tokens == 128  # 130 positions less padding_idx + 1


def test_bert_folder_matches_transformers_on_token_ids(tiny_bert_dir: Path):
    embedder = load_embedder(str(tiny_bert_dir))
    ids = embedder.tokenize(fx.TEXTS)
    expected = _hf_mean("BertModel", tiny_bert_dir, ids)
    assert cosines(embedder.embed_ids(ids), expected).min() >= 0.9999


@pytest.mark.parametrize("ftype", ["F32", "F16"])
def test_bert_gguf_matches_its_folder_and_llama_cpp(tiny_bert_dir: Path, tmp_path: Path, ftype: str):
    path = fx.write_encoder_gguf(tmp_path / "bert.gguf", tiny_bert_dir, "bert", pooling_type=1, ftype=ftype)
    gguf_embedder = load_embedder(str(path))
    assert gguf_embedder.info.family == "bert" and gguf_embedder.dim == 64
    folder_vectors = load_embedder(str(tiny_bert_dir)).embed(fx.TEXTS)
    got = gguf_embedder.embed(fx.TEXTS)
    assert cosines(got, folder_vectors).min() >= (0.9999 if ftype == "F32" else 0.999)
    ref_tokens, ref_vectors = llama_cpp_embed(path, fx.TEXTS)
    assert gguf_embedder.tokenize(fx.TEXTS) == ref_tokens
    assert cosines(got, ref_vectors).min() >= 0.9999


def test_bert_gguf_cls_pooling_matches_llama_cpp(tiny_bert_dir: Path, tmp_path: Path):
    path = fx.write_encoder_gguf(tmp_path / "bert-cls.gguf", tiny_bert_dir, "bert", pooling_type=2)
    embedder = load_embedder(str(path))
    assert embedder.pooling == Pooling("cls", normalize=True)
    _, ref_vectors = llama_cpp_embed(path, fx.TEXTS)
    assert cosines(embedder.embed(fx.TEXTS), ref_vectors).min() >= 0.9999


def test_xlm_roberta_gguf_matches_transformers_and_llama_cpp(tiny_xlmr_dir: Path, tmp_path: Path):
    path = fx.write_encoder_gguf(tmp_path / "xlmr.gguf", tiny_xlmr_dir, "xlm-roberta")
    source = gguf_embedding_source(path)
    assert source.info.family == "bert" and source.max_tokens == 128
    embedder = load_embedder(str(path))
    ref_tokens, ref_vectors = llama_cpp_embed(path, fx.TEXTS)
    # SentencePiece (and llama.cpp) drop the trailing space that the HF fast tokenizer keeps as "▁"
    assert embedder.tokenize(fx.TEXTS) == ref_tokens
    got = embedder.embed(fx.TEXTS)
    assert cosines(got, ref_vectors).min() >= 0.9999
    assert cosines(got, _hf_mean("XLMRobertaModel", tiny_xlmr_dir, ref_tokens)).min() >= 0.9999


def test_nomic_bert_folder_and_gguf_match_llama_cpp(tiny_nomic_dir: Path, tmp_path: Path):
    path = fx.write_encoder_gguf(tmp_path / "nomic.gguf", tiny_nomic_dir, "nomic-bert")
    folder_embedder = load_embedder(str(tiny_nomic_dir))
    gguf_embedder = load_embedder(str(path))
    assert folder_embedder.info.family == gguf_embedder.info.family == "nomic-bert"
    from_folder, from_gguf = folder_embedder.embed(fx.TEXTS), gguf_embedder.embed(fx.TEXTS)
    assert cosines(from_folder, from_gguf).min() >= 0.9999
    ref_tokens, ref_vectors = llama_cpp_embed(path, fx.TEXTS)
    assert gguf_embedder.tokenize(fx.TEXTS) == ref_tokens
    assert cosines(from_gguf, ref_vectors).min() >= 0.9999


def test_qwen3_embedding_folder_matches_sentence_transformers(tmp_path: Path):
    st = pytest.importorskip("sentence_transformers")
    folder = fx.tiny_qwen3_embedding(tmp_path / "qwen3-embedding")
    embedder = load_embedder(str(folder))
    assert embedder.source.kind == "decoder" and embedder.pooling == Pooling("last", normalize=True)
    reference = st.SentenceTransformer(str(folder), device="cpu")
    limit = reference.max_seq_length
    assert embedder.tokenize(fx.TEXTS) == [reference.tokenizer(t, truncation=True, max_length=limit)["input_ids"]
                                           for t in fx.TEXTS]
    assert embedder.tokenize(fx.TEXTS)[0][-1] == reference.tokenizer.eos_token_id
    got, expected = embedder.embed(fx.TEXTS), reference.encode(fx.TEXTS)
    assert cosines(got, expected).min() >= 0.9999


def test_qwen3_embedding_gguf_matches_llama_cpp(tmp_path: Path):
    from tests.gguf.conftest import ARCH_SPECS
    from tests.gguf.tiny_gguf import bpe_tokenizer, state_dict, write_gguf

    tok = bpe_tokenizer("qwen2")
    spec = ARCH_SPECS["qwen3"]
    path = write_gguf(tmp_path / "qwen3-embedding.gguf", spec, state_dict(spec, len(tok.tokens), seed=5), tok,
                      extra_kv={"qwen3.pooling_type": 3, "tokenizer.ggml.add_eos_token": True})
    embedder = load_embedder(str(path))
    assert embedder.source.kind == "decoder" and embedder.pooling == Pooling("last", normalize=True)
    ref_tokens, ref_vectors = llama_cpp_embed(path, fx.TEXTS)
    assert embedder.tokenize(fx.TEXTS) == ref_tokens
    assert all(ids[-1] == tok.eos for ids in ref_tokens)
    assert cosines(embedder.embed(fx.TEXTS), ref_vectors).min() >= 0.9999
