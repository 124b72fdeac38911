"""GraphIndex: an HNSW graph (usearch) over one context's unit vectors, for the contexts too large to scan.

A lookup walks a few hundred vectors of the graph instead of reading every vector of the context (at
100k entries a numpy scan reads 150 MB per question). Vectors are kept as int8 (usearch scales unit
vectors by 127): 4x less memory than float32 and the fastest to build and walk on the test box; the
graph only proposes candidates, which VectorIndex rescores exactly from its float32 rows. An approximate
search can miss a neighbour (a cache miss), never make one up (a wrong hit).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

CONNECTIVITY = 16  # HNSW's M
EXPANSION_ADD = 64  # efConstruction
EXPANSION_SEARCH = 64  # ef: candidates kept while walking; recall of a paraphrase-close neighbour ~1.0


class GraphIndex:
    """String keys over usearch's integer labels. Not thread-safe: VectorIndex holds its lock around it."""

    def __init__(self, dim: int, keys: list[str], vectors: np.ndarray, index: object = None) -> None:
        from usearch.index import Index

        if index is None:
            index = Index(ndim=dim, metric="ip", dtype="i8", connectivity=CONNECTIVITY, expansion_add=EXPANSION_ADD,
                          expansion_search=EXPANSION_SEARCH)
        self._index = index
        self._labels: dict[str, int] = {}
        self._keys: dict[int, str] = {}
        self._next = itertools.count()
        if keys:
            labels = np.array([self._label(k) for k in keys], dtype=np.uint64)
            # One thread: usearch's parallel insertion left a near-duplicate unreachable in about 1 build
            # of 20 (600 vectors), and the build runs beside the engine on a 2-core box anyway.
            self._index.add(labels, np.ascontiguousarray(vectors, dtype=np.float32), threads=1)

    def __len__(self) -> int:
        return len(self._labels)

    def save(self, path: Path) -> None:
        """The graph and its key of each label, beside it (`<path>.keys.json`). A pair left half written
        costs recall only: labels without a key are skipped, keys without a vector never found."""
        self._index.save(f"{path}.tmp")
        Path(f"{path}.keys.json.tmp").write_text(json.dumps(list(self._labels.items())))
        Path(f"{path}.tmp").replace(path)
        Path(f"{path}.keys.json.tmp").replace(f"{path}.keys.json")

    @classmethod
    def restore(cls, path: Path, dim: int) -> GraphIndex | None:
        """A graph saved by `save`, or None when there is none that fits."""
        from usearch.index import Index

        try:
            labels = json.loads(Path(f"{path}.keys.json").read_text())
            index = Index.restore(str(path))
        except (OSError, ValueError, RuntimeError):
            return None
        if index is None or index.ndim != dim:
            return None
        index.expansion_search = EXPANSION_SEARCH
        graph = cls(dim, [], np.zeros((0, dim), dtype=np.float32), index)
        graph._labels = {key: int(label) for key, label in labels}
        graph._keys = {label: key for key, label in graph._labels.items()}
        graph._next = itertools.count(max(graph._keys, default=-1) + 1)
        return graph

    def keys(self) -> set[str]:
        return set(self._labels)

    def _label(self, key: str) -> int:
        label = next(self._next)
        self._labels[key] = label
        self._keys[label] = key
        return label

    def add(self, key: str, vector: np.ndarray) -> None:
        if key in self._labels:
            self.remove(key)
        self._index.add(self._label(key), np.asarray(vector, dtype=np.float32), threads=1)

    def remove(self, key: str) -> None:
        label = self._labels.pop(key, None)
        if label is not None:
            del self._keys[label]
            self._index.remove(label)

    def search(self, vector: np.ndarray, k: int) -> list[str]:
        """Keys of (about) the k nearest vectors by inner product, nearest first."""
        matches = self._index.search(np.asarray(vector, dtype=np.float32), k, threads=1)
        return [self._keys[int(label)] for label in matches.keys if int(label) in self._keys]
