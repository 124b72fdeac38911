"""VectorIndex: the semantic tier's in-process index, one group of unit vectors per context.

A lookup only ever compares a question with entries of the same context (a hit elsewhere would answer
under another system prompt, model or conversation), so each context is a group of its own, and a
context holding few entries costs little whatever the total. A group is a dense float32 matrix; up to
GRAPH_MIN_ENTRIES rows it is scanned (exact). Past that it also gets an HNSW graph (graph_index.py)
whose candidates are rescored exactly from the matrix, so a lookup stays under a millisecond at 100k
entries in one context (benchmarks/cache.py latency measures both). Graphs are built on a thread of
their own, at start (the index is rebuilt from SQLite) and when a group grows past the limit; until
its graph is ready a group is scanned. A clean shutdown saves the graphs beside the SQLite file; a
start takes a saved graph whose keys are exactly its context's entries instead of building it again.
Removal swaps the last row into the hole.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from velollm.cache.graph_index import GraphIndex

logger = logging.getLogger(__name__)

GRAPH_MIN_ENTRIES = 2048  # below this a scan is as fast as a graph walk, and exact
GRAPH_CANDIDATES = 16  # candidates asked of the graph for each of the k results wanted, rescored exactly
# OpenBLAS runs a matrix-vector product of more than ~1k x 384 on all cores; next to other busy
# threads that costs 100+ ms at p99 (measured on the 2-core test box). Chunks of this many rows stay on
# the calling thread.
SCAN_CHUNK_ROWS = 1024


def _graph_path(folder: Path, context: str) -> Path:
    return folder / f"graph-{hashlib.sha256(context.encode()).hexdigest()[:32]}.usearch"


def scan(vectors: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """vectors @ vector on the calling thread only (see SCAN_CHUNK_ROWS)."""
    if len(vectors) <= SCAN_CHUNK_ROWS:
        return vectors @ vector
    return np.concatenate([vectors[i:i + SCAN_CHUNK_ROWS] @ vector for i in range(0, len(vectors), SCAN_CHUNK_ROWS)])


class _Group:
    def __init__(self, dim: int) -> None:
        self.vectors = np.zeros((8, dim), dtype=np.float32)
        self.keys: list[str] = []
        self.rows: dict[str, int] = {}
        self.graph: GraphIndex | None = None
        self.building = False  # a graph is being built for this group

    def add(self, key: str, vector: np.ndarray) -> None:
        if key in self.rows:
            self.vectors[self.rows[key]] = vector
        else:
            n = len(self.keys)
            if n == len(self.vectors):
                grown = np.zeros((2 * n, self.vectors.shape[1]), dtype=np.float32)
                grown[:n] = self.vectors
                self.vectors = grown
            self.vectors[n] = vector
            self.keys.append(key)
            self.rows[key] = n
        if self.graph is not None:
            self.graph.add(key, vector)

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
        if self.graph is not None:
            self.graph.remove(key)

    def adopt(self, graph: GraphIndex) -> None:
        """Takes a graph built from an earlier snapshot, bringing it up to date first."""
        for key in self.rows.keys() - graph.keys():
            graph.add(key, self.vectors[self.rows[key]])
        for key in graph.keys() - self.rows.keys():
            graph.remove(key)
        self.graph = graph

    def search(self, vector: np.ndarray, k: int) -> list[tuple[float, str]]:
        if self.graph is not None:
            keys = self.graph.search(vector, k * GRAPH_CANDIDATES)
            scores = self.vectors[[self.rows[key] for key in keys]] @ vector
        else:
            keys = self.keys
            scores = scan(self.vectors[:len(keys)], vector)
        if len(keys) > k:
            top = np.argpartition(-scores, k)[:k]
            top = top[np.argsort(-scores[top])]
        else:
            top = np.argsort(-scores)
        return [(float(scores[i]), keys[i]) for i in top]


class VectorIndex:
    """Thread-safe: lookups run on worker threads while the server adds entries."""

    def __init__(self, dim: int, graph_min_entries: int = GRAPH_MIN_ENTRIES) -> None:
        self.dim = dim
        if importlib.util.find_spec("usearch") is None:
            logger.warning("usearch is not installed (pip install 'velollm[cache]'): large semantic cache "
                           "contexts are scanned in full")
            graph_min_entries = 1 << 62
        self.graph_min_entries = graph_min_entries
        self._groups: dict[str, _Group] = {}
        self._lock = threading.Lock()
        self._builders: list[threading.Thread] = []

    def __len__(self) -> int:
        return sum(len(g.keys) for g in self._groups.values())

    def _check(self, vector: np.ndarray) -> None:
        if vector.shape != (self.dim,):
            raise ValueError(f"vector of shape {vector.shape}, index holds {self.dim}-d vectors")

    def add(self, context: str, key: str, vector: np.ndarray) -> None:
        self._check(vector)
        with self._lock:
            group = self._groups.setdefault(context, _Group(self.dim))
            group.add(key, vector)
            self._want_graph(context, group)

    def load(self, entries: Iterable[tuple[str, str, np.ndarray]], saved: Path | None = None) -> int:
        """Replaces the contents with (context, key, vector) triples (what a start does); graphs that
        `save_graphs` left in the folder `saved` are taken where they still fit."""
        groups: dict[str, _Group] = {}
        n = 0
        for context, key, vector in entries:
            self._check(vector)
            groups.setdefault(context, _Group(self.dim)).add(key, vector)
            n += 1
        for context, group in groups.items():
            if saved is not None and len(group.keys) >= self.graph_min_entries:
                graph = GraphIndex.restore(_graph_path(saved, context), self.dim)
                if graph is not None and graph.keys() == group.rows.keys():
                    group.graph = graph
        with self._lock:
            self._groups = groups
            for context, group in groups.items():
                self._want_graph(context, group)
        return n

    def save_graphs(self, folder: Path) -> int:
        """Saves every group's graph into `folder` (a clean shutdown), and removes graphs saved before."""
        for old in folder.glob("graph-*"):
            old.unlink(missing_ok=True)
        with self._lock:
            groups = [(context, group.graph) for context, group in self._groups.items() if group.graph is not None]
            for context, graph in groups:
                try:
                    graph.save(_graph_path(folder, context))
                except (OSError, RuntimeError) as exc:
                    logger.warning("semantic cache: saving a graph failed (%s); it is built again at start", exc)
        return len(groups)

    def _want_graph(self, context: str, group: _Group) -> None:
        """Starts building the group's graph once it is large enough (called under the lock)."""
        if group.graph is None and not group.building and len(group.keys) >= self.graph_min_entries:
            group.building = True
            builder = threading.Thread(target=self._build, args=(context, group), daemon=True,
                                       name="velollm-cache-graph")
            self._builders = [b for b in self._builders if b.is_alive()] + [builder]
            builder.start()

    def _build(self, context: str, group: _Group) -> None:
        t0 = time.perf_counter()
        with self._lock:
            keys = list(group.keys)
            vectors = group.vectors[:len(keys)].copy()
        try:
            graph = GraphIndex(self.dim, keys, vectors)  # outside the lock: lookups go on, scanning
        except Exception:
            logger.exception("semantic cache: building the graph of a context failed; it is scanned")
            return
        with self._lock:
            if self._groups.get(context) is group:
                group.adopt(graph)
        logger.info("semantic cache: graph of %d entries built in %.1f s", len(keys), time.perf_counter() - t0)

    def wait_for_graphs(self, timeout: float | None = None) -> None:
        """Waits for the graphs being built (tests, benchmarks)."""
        for builder in list(self._builders):
            builder.join(timeout)

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
