"""ChatCompletionStore: stored chat completions (`store: true` on /v1/chat/completions).

They live in the ResponseStore's SQLite file, in their own table, under the same retention limit (at most
`max_completions`, none older than `max_age_s`; pruned on every write): one file and one set of
`--responses-max` rules for everything this server keeps of a conversation, and one size cap over both tables
(`size`: store_size.py). Each row holds the completion
as answered (with its `metadata`), the input messages as sent, and what listings filter by (model,
metadata). A row over `max_row_bytes` (its JSON text: completion, messages, metadata) is not written: `put`
raises RowTooLarge. Calls block: the API runs them in a worker thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from velollm.responses.row_size import check_row
from velollm.responses.store_size import StoreSize

SCHEMA = """
CREATE TABLE IF NOT EXISTS chat_completions (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    model TEXT NOT NULL,
    metadata TEXT NOT NULL,
    completion TEXT NOT NULL,
    messages TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chat_completions_created_at ON chat_completions (created_at);
"""


class UnknownCursor(KeyError):
    """A list's `after` names no stored completion (or one the filters leave out)."""


@dataclass(frozen=True)
class CompletionPage:
    data: list[dict[str, Any]]
    has_more: bool


class ChatCompletionStore:
    def __init__(self, db: sqlite3.Connection, lock: threading.Lock, *, max_completions: int,
                 max_age_s: float, max_row_bytes: int = 16 << 20, size: StoreSize) -> None:
        self._db, self._lock, self._size = db, lock, size
        self.max_completions, self.max_age_s, self.max_row_bytes = max_completions, max_age_s, max_row_bytes
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA.split(";"):  # not executescript: it commits whatever is open first
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute("COMMIT")

    def put(self, completion: dict[str, Any], messages: list[Any], metadata: Mapping[str, str]) -> dict[str, Any]:
        """Keeps `completion` (its id the key: a later one with the same id replaces it) with the input
        `messages`; returns it as stored (with `metadata`). RowTooLarge (nothing written) when the row would
        be over `max_row_bytes`."""
        stored = {**completion, "metadata": dict(metadata)}
        row = (str(stored.get("model") or ""), json.dumps(stored["metadata"]), json.dumps(stored), json.dumps(messages))
        check_row(sum(len(column) for column in row), self.max_row_bytes)
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                aged, over = self._insert(stored["id"], now, row)
                evicted = self._size.evict(newest_completion=stored["id"])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._size.reclaim(evicted)
        self._size.on_evict("chat_completions", "age", aged)
        self._size.on_evict("chat_completions", "count", over)
        return stored

    def _insert(self, completion_id: str, now: float, row: tuple[str, str, str, str]) -> tuple[int, int]:
        """The row in, and the rows past the age and count limits out: how many each took."""
        self._db.execute("INSERT OR REPLACE INTO chat_completions (id, created_at, model, metadata, completion, "
                         "messages) VALUES (?, ?, ?, ?, ?, ?)", (completion_id, now, *row))
        aged = self._db.execute("DELETE FROM chat_completions WHERE created_at < ?", (now - self.max_age_s,)).rowcount
        over = self._db.execute("DELETE FROM chat_completions WHERE id NOT IN (SELECT id FROM chat_completions "
                                "ORDER BY created_at DESC, rowid DESC LIMIT ?)", (self.max_completions,)).rowcount
        return aged, over

    def get(self, completion_id: str) -> dict[str, Any] | None:
        row = self._row("completion", completion_id)
        return None if row is None else json.loads(row)

    def messages(self, completion_id: str) -> list[Any] | None:
        row = self._row("messages", completion_id)
        return None if row is None else json.loads(row)

    def _row(self, column: str, completion_id: str) -> str | None:
        with self._lock:
            row = self._db.execute(f"SELECT {column} FROM chat_completions WHERE id = ? AND created_at >= ?",
                                   (completion_id, time.time() - self.max_age_s)).fetchone()
        return None if row is None else row[0]

    def update_metadata(self, completion_id: str, metadata: Mapping[str, str]) -> dict[str, Any] | None:
        """The completion with its metadata replaced (None when unknown)."""
        with self._lock:
            self._db.execute("BEGIN")
            row = self._db.execute("SELECT completion FROM chat_completions WHERE id = ? AND created_at >= ?",
                                   (completion_id, time.time() - self.max_age_s)).fetchone()
            if row is None:
                self._db.execute("ROLLBACK")
                return None
            stored = {**json.loads(row[0]), "metadata": dict(metadata)}
            self._db.execute("UPDATE chat_completions SET metadata = ?, completion = ? WHERE id = ?",
                             (json.dumps(stored["metadata"]), json.dumps(stored), completion_id))
            self._db.execute("COMMIT")
        return stored

    def delete(self, completion_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM chat_completions WHERE id = ?", (completion_id,)).rowcount > 0

    def list(self, *, limit: int, order: str = "asc", after: str | None = None, model: str | None = None,
             metadata: Mapping[str, str] | None = None) -> CompletionPage:
        """A cursor page, oldest first (`order` "asc") or newest first ("desc"), of the completions of
        `model` whose metadata holds every pair of `metadata`, starting after the completion `after`."""
        descending = order == "desc"
        where, args = ["created_at >= ?"], [time.time() - self.max_age_s]
        if model is not None:
            where.append("model = ?")
            args.append(model)
        with self._lock:
            if after is not None:
                cursor = self._db.execute("SELECT created_at, rowid FROM chat_completions WHERE id = ?",
                                          (after,)).fetchone()
                if cursor is None:
                    raise UnknownCursor(after)
                where.append("(created_at, rowid) < (?, ?)" if descending else "(created_at, rowid) > (?, ?)")
                args += list(cursor)
            direction = "DESC" if descending else "ASC"
            rows = self._db.execute(f"SELECT metadata, completion FROM chat_completions WHERE {' AND '.join(where)} "
                                    f"ORDER BY created_at {direction}, rowid {direction}", args)
            page = []
            for meta, completion in rows:  # metadata filters in Python: keys are any strings
                if metadata and any(json.loads(meta).get(k) != v for k, v in metadata.items()):
                    continue
                if len(page) == limit:
                    return CompletionPage(page, has_more=True)
                page.append(json.loads(completion))
        return CompletionPage(page, has_more=False)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM chat_completions").fetchone()[0])
