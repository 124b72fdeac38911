from __future__ import annotations

import numpy as np
import pytest

from velollm.cache.vector_index import VectorIndex


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_search_is_per_context_and_ordered():
    index = VectorIndex(3)
    index.add("c1", "x", unit([1, 0, 0]))
    index.add("c1", "y", unit([1, 1, 0]))
    index.add("c2", "z", unit([1, 0, 0]))
    hits = index.search("c1", unit([1, 0.1, 0]), k=4)
    assert [k for _, k in hits] == ["x", "y"] and hits[0][0] > hits[1][0]
    assert index.search("c3", unit([1, 0, 0])) == [] and not index.has("c3") and index.has("c1")


def test_growth_removal_and_exact_scores_against_numpy():
    rng = np.random.default_rng(0)
    index = VectorIndex(8)
    vectors = {f"k{i}": unit(rng.standard_normal(8)) for i in range(100)}
    for k, v in vectors.items():
        index.add("c", k, v)
    for k in list(vectors)[::2]:
        index.remove("c", k)
        del vectors[k]
    q = unit(rng.standard_normal(8))
    expected = sorted(((float(v @ q), k) for k, v in vectors.items()), reverse=True)[:5]
    got = index.search("c", q, k=5)
    assert [k for _, k in got] == [k for _, k in expected]
    assert np.allclose([s for s, _ in got], [s for s, _ in expected], atol=1e-6)
    assert len(index) == 50
    with pytest.raises(ValueError):
        index.add("c", "bad", np.zeros(3, dtype=np.float32))
