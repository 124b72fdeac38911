"""StoreSize: the cap on the whole store file (`--responses-max-store-size`, 1 GiB by default).

The count and age limits bound how many rows there are and the row cap (row_size.py) how large one is;
this bounds their sum as the disk holds it: the database's pages in use (rows, indexes, SQLite's
overhead), both tables together. After a write that takes them over the cap, the oldest rows go, stored
responses and stored chat completions in one order (oldest `created_at` first), until they are under it:
a response by the store's own rule (`retire`: out of the API at once; its row stays while a kept response
continues it, so a kept chain never loses its beginning and its rows count until it goes), a chat
completion deleted. The row just written is never evicted, so the store is over the cap only while that
one row and the conversation it continues are over it alone (a warning says so).

Space freed beyond the cap goes back to the file system: the file is in `auto_vacuum = INCREMENTAL` (an
older file is converted by one VACUUM on open, which the server does at start-up: api/responses.py's
open_existing_store), and after an eviction the file's pages beyond the cap are
vacuumed away (`incremental_vacuum` moves pages from the end into free ones; the file is cut at the next
checkpoint). Free pages under the cap stay, for the next rows: at the cap a write takes what the last
eviction freed instead of moving pages each time (a row deleted or expired under the cap leaves its pages so
too). The WAL beside the file is checkpointed once it holds a 16th of the cap (at most SQLite's default of
1000 pages, 4 MiB) and cut back to that size after: on disk, the file and its `-wal` stay under the cap plus
that much, plus the newest row (an explicit checkpoint after each eviction tripled the cost of a write at
the cap).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

logger = logging.getLogger(__name__)

AUTO_VACUUM_INCREMENTAL = 2
_MAX_WAL_PAGES = 1000  # SQLite's default autocheckpoint; a small cap checkpoints sooner (a 16th of it)
_BATCH = 64  # eviction candidates read at a time

# The oldest rows of both tables, oldest first; the row just written is left out.
_OLDEST = f"""
SELECT created_at, 0 AS kind, rowid, id FROM response WHERE live = 1 AND id IS NOT ?
UNION ALL
SELECT created_at, 1 AS kind, rowid, id FROM chat_completions WHERE id IS NOT ?
ORDER BY created_at, kind, rowid LIMIT {_BATCH}
"""

# on_evict(store, limit, num_rows): rows of a store ("responses", "chat_completions") taken out by a limit
# ("age", "count", "size"); the API counts them in velollm_store_rows_evicted_total.
OnEvict = Callable[[str, str, int], None]


def ignore_evictions(store: str, limit: str, num_rows: int) -> None:
    """The default OnEvict."""


def prepare(db: sqlite3.Connection, max_bytes: int) -> None:
    """Before the tables: incremental auto_vacuum (a new file takes it now, an older one with a VACUUM), and
    the WAL checkpointed at a 16th of the cap (at most SQLite's 1000 pages) and cut back to that size after.
    Outside a transaction."""
    db.execute(f"PRAGMA auto_vacuum = {AUTO_VACUUM_INCREMENTAL}")
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    wal_pages = max(1, min(_MAX_WAL_PAGES, max_bytes // page_size // 16))
    db.execute(f"PRAGMA wal_autocheckpoint = {wal_pages}")
    db.execute(f"PRAGMA journal_size_limit = {wal_pages * page_size}")
    has_tables = db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is not None
    if has_tables and db.execute("PRAGMA auto_vacuum").fetchone()[0] != AUTO_VACUUM_INCREMENTAL:
        logger.info("responses store: converting the file to incremental auto_vacuum (one VACUUM)")
        db.execute("VACUUM")


def used_bytes(db: sqlite3.Connection) -> int:
    """The bytes of the database's pages in use (within the current transaction, if any)."""
    pages = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
    return pages * db.execute("PRAGMA page_size").fetchone()[0]


@dataclass
class Evicted:
    """What one write's eviction took out, for the metric and the log line."""

    responses: int = 0
    chat_completions: int = 0
    oldest_at: float | None = None  # created_at of the oldest row evicted

    def __bool__(self) -> bool:
        return bool(self.responses or self.chat_completions)


class StoreSize:
    def __init__(self, db: sqlite3.Connection, max_bytes: int, retire: Callable[[str], int],
                 on_evict: OnEvict = ignore_evictions) -> None:
        """`retire(response_id)`: take one stored response out (the ResponseStore's rule); the number taken."""
        if max_bytes < 1:
            raise ValueError(f"max_store_bytes must be at least 1, got {max_bytes}")
        self._db, self.max_bytes, self._retire, self.on_evict = db, max_bytes, retire, on_evict

    def evict(self, *, newest_response: str | None = None, newest_completion: str | None = None) -> Evicted:
        """Within the write's transaction: the oldest rows out until the pages in use are under the cap,
        the row just written (`newest_*`) kept."""
        evicted = Evicted()
        while used_bytes(self._db) > self.max_bytes:
            oldest = self._db.execute(_OLDEST, (newest_response, newest_completion)).fetchall()
            if not oldest:
                break
            for created_at, kind, _, row_id in oldest:
                if evicted.oldest_at is None:
                    evicted.oldest_at = created_at
                if kind == 0:
                    evicted.responses += self._retire(row_id)
                else:
                    evicted.chat_completions += self._db.execute(
                        "DELETE FROM chat_completions WHERE id = ?", (row_id,)).rowcount
                if used_bytes(self._db) <= self.max_bytes:
                    break
        return evicted

    def reclaim(self, evicted: Evicted, *, checkpoint: bool = False) -> None:
        """After the commit of a write that evicted: the file's pages beyond the cap given back (`checkpoint`:
        at once, the WAL emptied: a one-off eviction on open); one log line for the batch."""
        if not evicted and used_bytes(self._db) <= self.max_bytes:
            return
        page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        over = self._db.execute("PRAGMA page_count").fetchone()[0] - self.max_bytes // page_size
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        if min(over, free) > 0:  # executescript: Python's execute would step it once, one page
            self._db.executescript(f"PRAGMA incremental_vacuum({min(over, free)})")
        if checkpoint:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        used = used_bytes(self._db)
        if evicted:
            self.on_evict("responses", "size", evicted.responses)
            self.on_evict("chat_completions", "size", evicted.chat_completions)
            since = datetime.fromtimestamp(evicted.oldest_at or 0, timezone.utc).isoformat(timespec="seconds")
            logger.info("responses store over --responses-max-store-size (%d bytes): evicted %d responses and "
                        "%d chat completions, oldest first (from %s); %d bytes in use now", self.max_bytes,
                        evicted.responses, evicted.chat_completions, since, used)
        if used > self.max_bytes:
            logger.warning("responses store still over --responses-max-store-size (%d bytes in use, cap %d): "
                           "the newest row and the conversation it continues take it", used, self.max_bytes)
