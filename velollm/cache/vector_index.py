"""VectorIndex: the semantic tier's in-process index, one group of unit vectors per context.

A lookup only ever compares a question with entries of the same context, so each group is a dense
float32 matrix searched by one matrix-vector product (numpy; benchmarks/cache.py measures it at 1k
and 100k entries). Rebuilt from SQLite at start; removal swaps the last row into the hole.
"""

from __future__ import annotations

import threading

import numpy as np


class _Group:
    def __init__(self, dim: int) -> None:
        self.vectors = np.zeros((8, dim), dtype=np.float32)
        self.keys: list[str] = []
        self.rows: dict[str, int] = {}

    def add(self, key: str, vector: np.ndarray) -> None:
        if key in self.rows:
            self.vectors[self.rows[key]] = vector
            return
        n = len(self.keys)
        if n == len(self.vectors):
            grown = np.zeros((2 * n, self.vectors.shape[1]), dtype=np.float32)
            grown[:n] = self.vectors
            self.vectors = grown
        self.vectors[n] = vector
        self.keys.append(key)
        self.rows[key] = n

    def remove(self, key: str) -> None:
        row = self.rows.pop(key, None)
        if row is None:
            return
        last = len(self.keys) - 1
        if row != last:
            moved = self.keys[last]
            self.vectors[row] = self.vectors[last]
            self.keys[row] = moved
            self.rows[moved] = row
        self.keys.pop()

    def search(self, vector: np.ndarray, k: int) -> list[tuple[float, str]]:
        n = len(self.keys)
        scores = self.vectors[:n] @ vector
        if n > k:
            top = np.argpartition(-scores, k)[:k]
            top = top[np.argsort(-scores[top])]
        else:
            top = np.argsort(-scores)
        return [(float(scores[i]), self.keys[i]) for i in top]


class VectorIndex:
    """Thread-safe: lookups run on worker threads while the server adds entries."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._groups: dict[str, _Group] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(len(g.keys) for g in self._groups.values())

    def add(self, context: str, key: str, vector: np.ndarray) -> None:
        if vector.shape != (self.dim,):
            raise ValueError(f"vector of shape {vector.shape}, index holds {self.dim}-d vectors")
        with self._lock:
            self._groups.setdefault(context, _Group(self.dim)).add(key, vector)

    def remove(self, context: str, key: str) -> None:
        with self._lock:
            group = self._groups.get(context)
            if group is not None:
                group.remove(key)
                if not group.keys:
                    del self._groups[context]

    def has(self, context: str) -> bool:
        return context in self._groups

    def search(self, context: str, vector: np.ndarray, k: int = 4) -> list[tuple[float, str]]:
        """Up to k (cosine, key) of the context's entries, most similar first."""
        with self._lock:
            group = self._groups.get(context)
            return group.search(vector, k) if group is not None else []

    def clear(self) -> None:
        with self._lock:
            self._groups.clear()
