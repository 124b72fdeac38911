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


def _near(v, rng, noise=0.3):
    return unit(v + noise * rng.standard_normal(v.shape[0]) / np.sqrt(v.shape[0]))


def test_a_large_context_gets_a_graph_that_finds_near_duplicates_and_forgets_removed_entries():
    pytest.importorskip("usearch")
    rng = np.random.default_rng(1)
    index = VectorIndex(64, graph_min_entries=256)
    vectors = {f"k{i}": unit(rng.standard_normal(64)) for i in range(600)}
    for k, v in vectors.items():
        index.add("big", k, v)
    index.add("small", "s", vectors["k0"])
    index.wait_for_graphs()
    group = index._groups["big"]
    assert group.graph is not None and index._groups["small"].graph is None
    for k in ("k1", "k2", "k3"):
        index.remove("big", k)
    for i in range(600):  # every question close to an entry finds it, with its exact cosine
        q = _near(vectors[f"k{i}"], rng)
        got = index.search("big", q, k=4)
        if i in (1, 2, 3):
            assert all(key not in ("k1", "k2", "k3") for _, key in got)
            continue
        assert got[0][1] == f"k{i}" and abs(got[0][0] - float(vectors[f"k{i}"] @ q)) < 1e-5
    index.add("big", "k1", vectors["k1"])
    assert index.search("big", vectors["k1"], k=1)[0][1] == "k1"


def test_load_builds_graphs_in_the_background_and_catches_up_with_changes_made_meanwhile():
    pytest.importorskip("usearch")
    rng = np.random.default_rng(2)
    vectors = {f"k{i}": unit(rng.standard_normal(32)) for i in range(3000)}
    index = VectorIndex(32, graph_min_entries=1000)
    assert index.load(("c", k, v) for k, v in vectors.items()) == 3000
    assert index.search("c", vectors["k5"], k=1)[0][1] == "k5"  # scanned while the graph is built
    index.add("c", "late", unit(rng.standard_normal(32)))
    index.remove("c", "k7")
    index.wait_for_graphs()
    assert index._groups["c"].graph is not None
    assert index._groups["c"].graph.keys() == set(index._groups["c"].rows)
    assert index.search("c", vectors["k5"], k=1)[0][1] == "k5"
    assert all(key != "k7" for _, key in index.search("c", vectors["k7"], k=4))


def test_scan_in_chunks_equals_one_product():
    from velollm.cache.vector_index import SCAN_CHUNK_ROWS, scan

    rng = np.random.default_rng(3)
    m = rng.standard_normal((SCAN_CHUNK_ROWS * 2 + 5, 16)).astype(np.float32)
    q = rng.standard_normal(16).astype(np.float32)
    assert np.allclose(scan(m, q), m @ q, atol=1e-5)


def test_graphs_saved_at_shutdown_are_taken_at_start_only_while_they_fit(tmp_path):
    pytest.importorskip("usearch")
    rng = np.random.default_rng(4)
    vectors = {f"k{i}": unit(rng.standard_normal(32)) for i in range(600)}
    index = VectorIndex(32, graph_min_entries=256)
    index.load(("c", k, v) for k, v in vectors.items())
    index.wait_for_graphs()
    index.remove("c", "k9")
    del vectors["k9"]
    assert index.save_graphs(tmp_path) == 1 and len(list(tmp_path.glob("graph-*.usearch"))) == 1

    again = VectorIndex(32, graph_min_entries=256)
    again.load((("c", k, v) for k, v in vectors.items()), saved=tmp_path)
    assert again._groups["c"].graph is not None and not again._builders  # taken, not built
    for i in (0, 10, 599):
        q = _near(vectors[f"k{i}"], rng)
        assert again.search("c", q, k=1)[0][1] == f"k{i}"
    again.add("c", "new", unit(rng.standard_normal(32)))
    assert again.search("c", again._groups["c"].vectors[again._groups["c"].rows["new"]], k=1)[0][1] == "new"

    vectors["extra"] = unit(rng.standard_normal(32))  # the entries changed since the graph was saved
    third = VectorIndex(32, graph_min_entries=256)
    third.load((("c", k, v) for k, v in vectors.items()), saved=tmp_path)
    third.wait_for_graphs()
    assert third._groups["c"].graph.keys() == set(vectors)
