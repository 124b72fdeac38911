"""SQLite storage: survives a reopen, TTL, LRU, a corrupt file set aside, a full disk."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from velollm.cache.entry import CacheEntry
from velollm.cache.sqlite_store import SQLiteStore


def entry(key: str, ttl: float = 60, query: str | None = "q", vector: bool = False) -> CacheEntry:
    now = time.time()
    emb = np.ones(4, dtype=np.float32).tobytes() if vector else None
    return CacheEntry(key=key, context="ctx", kind="chat", model="m", query=query, answer={"answer": key},
                      expires=now + ttl, created=now, embedding=emb)


def test_entries_survive_a_reopen(tmp_path):
    path = tmp_path / "c.sqlite3"
    store = SQLiteStore(path, max_entries=10)
    assert store.put_sync(entry("a", vector=True)) and store.put_sync(entry("b"))
    store.close_sync()
    again = SQLiteStore(path, max_entries=10)
    assert again.count_sync() == 2
    assert again.get_sync("a").answer == {"answer": "a"}
    assert [row[0] for row in again.iter_semantic()] == ["a"]
    assert asyncio.run(again.get("b")).key == "b"


def test_expired_entries_are_misses_and_go_away(tmp_path):
    store = SQLiteStore(tmp_path / "c.sqlite3", max_entries=10)
    store.put_sync(entry("old", ttl=0.05))
    store.put_sync(entry("new", ttl=60))
    time.sleep(0.1)
    assert store.get_sync("old") is None and store.get_sync("new") is not None
    assert store.count_sync() == 1 and ("old", "ctx") in store.take_evicted()


def test_least_recently_used_goes_first(tmp_path):
    store = SQLiteStore(tmp_path / "c.sqlite3", max_entries=3)
    for k in "abc":
        store.put_sync(entry(k))
        time.sleep(0.01)
    store.touch_sync("a")  # b is now the least recently used
    store.put_sync(entry("d"))
    assert store.count_sync() == 3
    assert store.get_sync("b") is None and all(store.get_sync(k) for k in "acd")
    assert store.take_evicted() == [("b", "ctx")]


def test_a_corrupt_file_is_set_aside_and_a_new_one_started(tmp_path, caplog):
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    store = SQLiteStore(path, max_entries=10)
    assert store.set_aside is not None and store.set_aside.read_bytes().startswith(b"this is not")
    assert "unreadable" in caplog.text
    assert store.put_sync(entry("a")) and store.get_sync("a") is not None


def test_a_full_disk_stops_storing_and_keeps_serving(tmp_path, caplog):
    store = SQLiteStore(tmp_path / "c.sqlite3", max_entries=1000)
    store.put_sync(entry("kept"))
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store.limit_pages(pages)  # SQLite answers SQLITE_FULL as on a full disk
    big = entry("big")
    big.answer = {"text": "x" * 200_000}
    assert not store.put_sync(big)
    assert not store.storing and "disk is full" in caplog.text
    assert store.get_sync("kept").answer == {"answer": "kept"}
    assert not store.put_sync(entry("small"))  # stays off: no retry storm against a full disk


def test_clear_and_stats(tmp_path):
    store = SQLiteStore(tmp_path / "c.sqlite3", max_entries=10)
    store.put_sync(entry("a", vector=True))
    store.touch_sync("a")
    stats = store.stats_sync()
    assert stats["entries"] == 1 and stats["hits"] == 1 and stats["semantic_entries"] == 1
    assert store.clear_sync() == 1 and store.count_sync() == 0 and store.get_sync("a") is None


def test_an_exact_only_cache_keeps_no_list_of_evicted_keys(tmp_path):
    """Without a semantic tier nobody takes the evicted keys: they must not pile up (one row per eviction,
    for the server's lifetime)."""
    from velollm.cache.config import ResponseCacheConfig
    from velollm.cache.key import CacheKey
    from velollm.cache.response_cache import ResponseCache

    cache = ResponseCache.open(ResponseCacheConfig(tmp_path, max_entries=3))

    async def fill() -> None:
        for i in range(50):
            key = CacheKey("chat", "m", f"{i:032x}", "ctx", f"question {i}")
            assert await cache.store(key, {"answer": i})

    asyncio.run(fill())
    assert cache.sqlite.count_sync() == 3 and cache.sqlite.evicted == []
