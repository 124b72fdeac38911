"""SQLiteStore: the cache's entries in one SQLite file under $VELOLLM_CACHE; survives restarts.

An unreadable or corrupt file is renamed aside (reported) and a fresh one started; a full disk stops
storing (reported once) while lookups go on. Reads run on the caller's thread (primary-key lookups,
~0.1 ms: a hop to a worker thread would cost more) through a connection of that thread's own, which in
WAL mode never waits for a write; writes go through `put` (a worker thread) and one shared connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from velollm.cache.entry import CacheEntry

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY, context TEXT NOT NULL, kind TEXT NOT NULL, model TEXT NOT NULL, query TEXT,
    answer TEXT NOT NULL, embedding BLOB, created REAL NOT NULL, expires REAL NOT NULL,
    last_used REAL NOT NULL, hits INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS entries_last_used ON entries(last_used);
CREATE INDEX IF NOT EXISTS entries_expires ON entries(expires);
"""
_COLUMNS = "key, context, kind, model, query, answer, embedding, created, expires"
_PURGE_EVERY_S = 30.0
PURGE_BATCH = 256  # entries one write of a stale-identity purge deletes


def _is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc)


def _set_aside(path: Path, reason: str) -> Path:
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    logger.error("cache file %s is unreadable (%s): moved to %s, starting an empty cache", path, reason, aside)
    path.rename(aside)
    for suffix in ("-wal", "-shm"):
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            extra.rename(aside.with_name(aside.name + suffix))
    return aside


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    ok = conn.execute("PRAGMA quick_check").fetchone()
    if not ok or ok[0] != "ok":
        conn.close()
        raise sqlite3.DatabaseError(f"integrity check failed: {ok[0] if ok else 'no answer'}")
    conn.executescript(_SCHEMA)
    return conn


def _entry(row: tuple) -> CacheEntry:
    return CacheEntry(key=row[0], context=row[1], kind=row[2], model=row[3], query=row[4],
                      answer=json.loads(row[5]), embedding=row[6], created=row[7], expires=row[8])


class SQLiteStore:
    """Entries by exact key, LRU beyond `max_entries`, expired ones purged. Thread-safe."""

    def __init__(self, path: Path, max_entries: int) -> None:
        self.path = path
        self.max_entries = max_entries
        self.set_aside: Path | None = None
        self.storing = True  # False after the disk filled up
        self.evicted: list[tuple[str, str]] = []  # (key, context) removed since the last take_evicted()
        # Without a semantic tier nobody takes `evicted`: the cache turns this off, or the list grows by one
        # row per entry evicted or purged, for as long as the server runs.
        self.keeps_evicted = True
        self._lock = threading.Lock()
        self._readers = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._last_purge = 0.0
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = _connect(path)
        except sqlite3.DatabaseError as exc:
            self.set_aside = _set_aside(path, str(exc))
            self._conn = _connect(path)
        self._count = self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def limit_pages(self, max_pages: int) -> None:
        """Caps the file at `max_pages` pages: what a full disk looks like to SQLite (tests, quotas)."""
        with self._lock:
            self._conn.execute(f"PRAGMA max_page_count={int(max_pages)}")

    def _reader(self) -> sqlite3.Connection:
        """The calling thread's read connection (opened on its first read)."""
        conn = getattr(self._readers, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._readers.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    # -- sync API (CLI, benchmarks, worker threads) --
    def get_sync(self, key: str, now: float | None = None) -> CacheEntry | None:
        now = time.time() if now is None else now
        try:
            row = self._reader().execute(f"SELECT {_COLUMNS} FROM entries WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            logger.warning("cache read failed: %s", exc)
            return None
        if row is None:
            return None
        entry = _entry(row)
        if entry.expired(now):
            self.delete_sync(key)
            return None
        return entry

    def touch_sync(self, key: str) -> None:
        self._write("UPDATE entries SET last_used = ?, hits = hits + 1 WHERE key = ?", (time.time(), key))

    def put_sync(self, entry: CacheEntry) -> bool:
        if not self.storing:
            return False
        now = time.time()
        with self._lock:
            exists = self._conn.execute("SELECT 1 FROM entries WHERE key = ?", (entry.key,)).fetchone()
        stored = self._write(
            f"INSERT OR REPLACE INTO entries ({_COLUMNS}, last_used) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (entry.key, entry.context, entry.kind, entry.model, entry.query, _dumps(entry.answer),
             entry.embedding, entry.created, entry.expires, now))
        if stored:
            self._count += 0 if exists else 1
            self._evict(now)
        return stored

    def delete_sync(self, key: str) -> None:
        with self._lock:
            try:
                rows = self._conn.execute("DELETE FROM entries WHERE key = ? RETURNING key, context",
                                          (key,)).fetchall()
            except sqlite3.Error as exc:
                logger.warning("cache delete failed: %s", exc)
                return
        self._forget(rows)

    def purge_sync(self, prefix: str, keep: str, deadline: float) -> int:
        """Deletes the entries whose key begins with `prefix` but not with `keep` (a model's entries of an identity it
        no longer has: key.entry_prefixes), PURGE_BATCH at a time (a range of the primary key: each a short write, so
        `put` is never held up for long), until done or the monotonic `deadline`. Their (key, context) go to
        `evicted`, for the semantic tier. How many."""
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        removed = 0
        while time.monotonic() < deadline:
            with self._lock:
                try:
                    rows = self._conn.execute(
                        "DELETE FROM entries WHERE key IN (SELECT key FROM entries WHERE key >= ? AND key < ? "
                        "AND substr(key, 1, ?) != ? LIMIT ?) RETURNING key, context",
                        (prefix, upper, len(keep), keep, PURGE_BATCH)).fetchall()
                except sqlite3.Error as exc:
                    logger.warning("cache purge failed: %s", exc)
                    break
            self._forget(rows)
            removed += len(rows)
            if len(rows) < PURGE_BATCH:
                break
        return removed

    def clear_sync(self) -> int:
        with self._lock:
            removed = self._conn.execute("DELETE FROM entries").rowcount
            self._conn.execute("VACUUM")
        self._count = 0
        self.evicted.clear()
        return max(removed, 0)

    def count_sync(self) -> int:
        return self._count

    def iter_semantic(self) -> Iterator[tuple[str, str, str, bytes]]:
        """(key, context, query, embedding) of every live entry that has an embedding."""
        with self._lock:
            rows = self._conn.execute("SELECT key, context, query, embedding FROM entries WHERE embedding IS NOT "
                                      "NULL AND expires > ?", (time.time(),)).fetchall()
        yield from rows

    def stats_sync(self) -> dict[str, float]:
        with self._lock:
            row = self._conn.execute("SELECT COUNT(*), COALESCE(SUM(hits), 0), COUNT(embedding), "
                                     "COALESCE(SUM(LENGTH(answer)), 0) FROM entries").fetchone()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return {"entries": row[0], "hits": row[1], "semantic_entries": row[2], "answer_bytes": row[3],
                "file_bytes": size}

    def take_evicted(self) -> list[tuple[str, str]]:
        with self._lock:  # a purge or a put on a worker thread adds to it meanwhile
            out, self.evicted = self.evicted, []
        return out

    def close_sync(self) -> None:
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
            self._conn.close()

    # -- async API (the server) --
    async def get(self, key: str) -> CacheEntry | None:
        return self.get_sync(key)

    async def put(self, entry: CacheEntry) -> bool:
        return await asyncio.to_thread(self.put_sync, entry)

    async def touch(self, key: str) -> None:
        await asyncio.to_thread(self.touch_sync, key)

    async def count(self) -> int:
        return self._count

    async def purge(self, prefix: str, keep: str, deadline: float) -> int:
        return await asyncio.to_thread(self.purge_sync, prefix, keep, deadline)

    async def clear(self) -> int:
        return await asyncio.to_thread(self.clear_sync)

    async def close(self) -> None:
        self.close_sync()

    # -- internals --
    def _write(self, sql: str, params: tuple) -> bool:
        with self._lock:
            try:
                self._conn.execute(sql, params)
                return True
            except sqlite3.Error as exc:
                if _is_full(exc):
                    if self.storing:
                        logger.error("cache disk is full (%s): no new entries are stored; lookups go on", exc)
                    self.storing = False
                else:
                    logger.warning("cache write failed: %s", exc)
                return False

    def _evict(self, now: float) -> None:
        with self._lock:
            rows: list[tuple[str, str]] = []
            if now - self._last_purge > _PURGE_EVERY_S:
                self._last_purge = now
                rows += self._conn.execute("DELETE FROM entries WHERE expires <= ? RETURNING key, context",
                                           (now,)).fetchall()
            over = self._count - len(rows) - self.max_entries
            if over > 0:
                rows += self._conn.execute(
                    "DELETE FROM entries WHERE key IN (SELECT key FROM entries ORDER BY last_used LIMIT ?) "
                    "RETURNING key, context", (over,)).fetchall()
        self._forget(rows)

    def _forget(self, rows: list[tuple[str, str]]) -> None:
        with self._lock:
            self._count -= len(rows)
            if self.keeps_evicted:
                self.evicted.extend(rows)


def _dumps(answer: dict) -> str:
    return json.dumps(answer, ensure_ascii=False, separators=(",", ":"))
