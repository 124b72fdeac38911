"""RelayedFile: RelayedResponses kept on disk, so that a restart of this process still finds the responses that
upstreams stored (they outlive it there, as this process's own stored responses outlive it in its SQLite store).

One small SQLite table (response id, holder, wall time, the holder's URL), written as each id is learned or
forgotten: a row is tens of bytes, written in WAL mode without a sync per commit (a write is well under a
millisecond, on the event loop).
Opened on first use, so that a server that never passes a Responses create through makes no file. The file is a
convenience: when it cannot be opened or written (a read-only cache folder, another process holding a lock past the
timeout), the map goes on in memory and one warning says why.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable

logger = logging.getLogger(__name__)

_TABLE = "relayed (id TEXT PRIMARY KEY, holder TEXT NOT NULL, at REAL NOT NULL, url TEXT NOT NULL DEFAULT '')"
_SCHEMA = (f"CREATE TABLE IF NOT EXISTS {_TABLE}", "CREATE INDEX IF NOT EXISTS relayed_at ON relayed (at)")
# A file written before the url column: its rows' url is "" (the holder's name alone finds them)
_ADD_URL = "ALTER TABLE relayed ADD COLUMN url TEXT NOT NULL DEFAULT ''"
_LOCK_TIMEOUT_S = 0.2  # another server sharing the cache folder: wait this long for its lock, then skip the write


class RelayedFile:
    """The on-disk table of RelayedResponses at `path`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._failed = False

    def load(self, newer_than: float, limit: int) -> list[tuple[str, str, str, float]]:
        """The newest `limit` rows learned after `newer_than` (wall time), oldest first; the others are deleted."""
        db = self._open() if os.path.exists(self.path) else None  # no file yet: none made to say so
        if db is None:
            return []
        try:
            with db:
                db.execute("DELETE FROM relayed WHERE at <= ?", (newer_than,))
                (count,) = db.execute("SELECT COUNT(*) FROM relayed").fetchone()
                if count > limit:  # a lowered cap: the oldest go
                    db.execute("DELETE FROM relayed WHERE at < (SELECT at FROM relayed ORDER BY at DESC LIMIT 1 "
                               "OFFSET ?)", (limit - 1,))
            rows = db.execute("SELECT id, holder, url, at FROM relayed ORDER BY at").fetchall()
        except sqlite3.Error as exc:
            self._fail(exc)
            return []
        return [(str(i), str(h), str(u), float(a)) for i, h, u, a in rows]

    def put(self, response_id: str, holder: str, url: str, at: float, dropped: Iterable[str] = ()) -> None:
        """Writes one learned row, and deletes the `dropped` ones (evicted for the count or age) in the same commit."""
        self._write([("INSERT OR REPLACE INTO relayed (id, holder, at, url) VALUES (?, ?, ?, ?)",
                      (response_id, holder, at, url)),
                     *(("DELETE FROM relayed WHERE id = ?", (d,)) for d in dropped)])

    def drop(self, response_ids: Iterable[str]) -> None:
        self._write([("DELETE FROM relayed WHERE id = ?", (d,)) for d in response_ids])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _write(self, statements: list[tuple[str, tuple[object, ...]]]) -> None:
        db = self._open()
        if db is None:
            return
        try:
            with db:
                for sql, args in statements:
                    db.execute(sql, args)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                self._fail(exc)
            else:  # another server on the same file, busy past the timeout: this write only is lost
                logger.warning("%s: a write was skipped (%s)", self.path, exc)
        except sqlite3.Error as exc:
            self._fail(exc)

    def _open(self) -> sqlite3.Connection | None:
        if self._db is None and not self._failed:
            try:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                db = sqlite3.connect(self.path, timeout=_LOCK_TIMEOUT_S, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                for sql in _SCHEMA:
                    db.execute(sql)
                if "url" not in {row[1] for row in db.execute("PRAGMA table_info(relayed)")}:
                    db.execute(_ADD_URL)
                self._db = db
            except (sqlite3.Error, OSError) as exc:
                self._fail(exc)
        return self._db

    def _fail(self, exc: Exception) -> None:
        """Goes on in memory from here (one warning): a lookup after a restart may then be a 404."""
        if not self._failed:
            logger.warning("the ids of responses stored upstream are kept in memory only: %s: %s", self.path, exc)
        self._failed = True
        self.close()
