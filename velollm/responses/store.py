"""ResponseStore: stored responses (store: true) for GET /v1/responses/{id} and previous_response_id;
and, in the same file, the stored chat completions (`chat_completions`, chat_store.py).

One SQLite file (`$VELOLLM_CACHE/responses.sqlite` by default) holds each response with the chat
conversation that led to it and its own answer, so a follow-up turn continues from there, and its
input and output items by id (what an `item_reference` input item names). The oldest rows go beyond
`max_responses` and after `max_age_s` (pruned on every write, their items with them). Calls block:
the API runs them in a worker thread.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from velollm.responses.chat_store import ChatCompletionStore

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    response TEXT NOT NULL,
    conversation TEXT NOT NULL,
    input_items TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS responses_created_at ON responses (created_at);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    response_id TEXT NOT NULL,
    item TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_response_id ON items (response_id);
"""


@dataclass(frozen=True)
class StoredResponse:
    response: dict[str, Any]
    conversation: list[dict[str, Any]]  # chat messages: the input history and this response's answer
    input_items: list[dict[str, Any]]  # this request's input as Responses items, with ids (input_items list)


class ResponseStore:
    def __init__(self, path: str | Path, *, max_responses: int = 10_000, max_age_s: float = 30 * 86400) -> None:
        if max_responses < 1 or max_age_s <= 0:
            raise ValueError("max_responses must be at least 1 and max_age_s positive")
        self.path = Path(path)
        self.max_responses, self.max_age_s = max_responses, max_age_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(responses)")}
        if "input_items" not in columns:  # a file written before input items were kept
            self._db.execute("ALTER TABLE responses ADD COLUMN input_items TEXT NOT NULL DEFAULT '[]'")
        # Stored chat completions share the file and its limits (their own table, counted apart).
        self.chat_completions = ChatCompletionStore(self._db, self._lock, max_completions=max_responses,
                                                    max_age_s=max_age_s)

    def put(self, response: dict[str, Any], conversation: list[dict[str, Any]],
            input_items: list[dict[str, Any]] | None = None) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO responses (id, created_at, response, conversation, input_items) "
                             "VALUES (?, ?, ?, ?, ?)", (response["id"], now, json.dumps(response),
                                                        json.dumps(conversation), json.dumps(input_items or [])))
            self._db.execute("DELETE FROM responses WHERE created_at < ?", (now - self.max_age_s,))
            self._db.execute("DELETE FROM responses WHERE id NOT IN "
                             "(SELECT id FROM responses ORDER BY created_at DESC, rowid DESC LIMIT ?)",
                             (self.max_responses,))
            items = [i for i in [*(input_items or []), *response.get("output", [])] if isinstance(i.get("id"), str)]
            self._db.executemany("INSERT OR REPLACE INTO items (id, response_id, item) VALUES (?, ?, ?)",
                                 [(i["id"], response["id"], json.dumps(i)) for i in items])
            self._db.execute("DELETE FROM items WHERE response_id NOT IN (SELECT id FROM responses)")
            self._db.execute("COMMIT")

    def get(self, response_id: str) -> StoredResponse | None:
        with self._lock:
            row = self._db.execute("SELECT response, conversation, created_at, input_items FROM responses "
                                   "WHERE id = ?", (response_id,)).fetchone()
        if row is None or row[2] < time.time() - self.max_age_s:
            return None
        return StoredResponse(json.loads(row[0]), json.loads(row[1]), json.loads(row[3]))

    def item(self, item_id: str) -> dict[str, Any] | None:
        """An input or output item of a stored response, by its id (None when unknown or expired)."""
        with self._lock:
            row = self._db.execute("SELECT items.item, responses.created_at FROM items JOIN responses "
                                   "ON responses.id = items.response_id WHERE items.id = ?", (item_id,)).fetchone()
        if row is None or row[1] < time.time() - self.max_age_s:
            return None
        return json.loads(row[0])

    def delete(self, response_id: str) -> bool:
        with self._lock:
            self._db.execute("DELETE FROM items WHERE response_id = ?", (response_id,))
            return self._db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
