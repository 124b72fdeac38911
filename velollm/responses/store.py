"""ResponseStore: stored responses (store: true) for GET /v1/responses/{id} and previous_response_id;
and, in the same file, the stored chat completions (`chat_completions`, chat_store.py).

One SQLite file (`$VELOLLM_CACHE/responses.sqlite` by default). Each response row holds only what is
new in it: the Response object, its own input items and output items (one `response_item` row each,
indexed by id for `item_reference`), and the `previous_response_id` it continued. The conversation a
follow-up turn continues, and the input_items list, are rebuilt by walking that chain back (one
recursive query), so a conversation of n turns takes O(n) bytes, not O(n^2).

A row over `max_row_bytes` (its JSON text: the response, its items, a base) is not written: `put` raises
RowTooLarge. The oldest responses go beyond `max_responses` and after `max_age_s` (on every write), and the
oldest rows of both tables while the file is over `max_store_bytes` (store_size.py). A deleted or
pruned response is gone from the API at once (not found, not continued, its items not referable), but
its row stays, no longer `live`, while a stored response continues it: a live chain never loses its
beginning, and the rows go when the last response that needed them does. A row with a `base` (one
written by the old layout, or one whose previous response vanished while it was being answered) holds
the conversation up to it and ends the walk. Calls block: the API runs them in a worker thread.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from velollm.responses.chat_store import ChatCompletionStore
from velollm.responses.items import items_to_messages
from velollm.responses.legacy_store import upgrade
from velollm.responses.row_size import check_row
from velollm.responses.runner import is_running, this_process
from velollm.responses.store_size import OnEvict, StoreSize, ignore_evictions, prepare

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 4
_SCHEMA = """
CREATE TABLE IF NOT EXISTS response (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    previous_id TEXT,       -- the previous_response_id it continued
    response TEXT NOT NULL, -- the Response object, its output in response_item
    base TEXT,              -- {"messages", "input_items"} up to and with it, when it ends the walk
    live INTEGER NOT NULL DEFAULT 1, -- 0: deleted or pruned, kept as the beginning of live responses
    runner TEXT             -- the process running it, while queued or in progress (runner.py)
);
CREATE INDEX IF NOT EXISTS response_live_created_at ON response (live, created_at);
CREATE INDEX IF NOT EXISTS response_previous_id ON response (previous_id);
CREATE INDEX IF NOT EXISTS response_runner ON response (runner) WHERE runner IS NOT NULL;  -- the few unfinished
CREATE TABLE IF NOT EXISTS response_item (
    response_id TEXT NOT NULL,
    seq INTEGER NOT NULL,   -- its input items first, then its output items
    output INTEGER NOT NULL,
    id TEXT,
    item TEXT NOT NULL,
    PRIMARY KEY (response_id, seq)
);
CREATE INDEX IF NOT EXISTS response_item_id ON response_item (id);
"""

_MAX_CHAIN = 1_000_000  # turns walked back at most (a file changed behind our back could hold a loop)

# One response and its chain back to the first (or to the first with a base), oldest first.
_CHAIN = """
WITH RECURSIVE chain(id, depth) AS (
    SELECT ?, 0
    UNION ALL
    SELECT r.previous_id, chain.depth + 1 FROM chain JOIN response r ON r.id = chain.id
    WHERE r.base IS NULL AND r.previous_id IS NOT NULL AND chain.depth < ?
)
SELECT chain.depth, r.id, r.previous_id, r.base, i.output, i.item
FROM chain JOIN response r ON r.id = chain.id LEFT JOIN response_item i ON i.response_id = r.id
ORDER BY chain.depth DESC, i.seq
"""


@dataclass(frozen=True)
class History:
    """What a turn made with `previous_response_id` continues."""

    messages: list[dict[str, Any]]  # chat messages (no instructions), through the response's answer
    items: list[dict[str, Any]]  # its input items (the earlier turns' too), then its output items
    num_output_items: int  # of the response itself, at the end of `items`

    @property
    def input_items(self) -> list[dict[str, Any]]:
        """What `GET /v1/responses/{id}/input_items` lists, oldest first."""
        return self.items[:len(self.items) - self.num_output_items]

    def then(self, input_items: Sequence[dict[str, Any]], output_items: Sequence[dict[str, Any]]) -> History:
        """The history of a response that continued this one."""
        messages = [*self.messages, *items_to_messages(input_items), *items_to_messages(output_items)]
        return History(messages, [*self.items, *input_items, *output_items], len(output_items))


@dataclass
class _Row:
    id: str
    previous_id: str | None
    base: dict[str, Any] | None
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]


class ResponseStore:
    def __init__(self, path: str | Path, *, max_responses: int = 10_000, max_age_s: float = 30 * 86400,
                 max_row_bytes: int = 16 << 20, max_store_bytes: int = 1 << 30,
                 on_evict: OnEvict = ignore_evictions) -> None:
        """`on_evict(store, limit, num_rows)` hears of the rows each limit takes out (for a metric)."""
        if max_responses < 1 or max_age_s <= 0 or max_row_bytes < 1:
            raise ValueError("max_responses and max_row_bytes must be at least 1 and max_age_s positive")
        self.path = Path(path)
        self.max_responses, self.max_age_s, self.max_row_bytes = max_responses, max_age_s, max_row_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        prepare(self._db, max_store_bytes)
        self._db.execute("PRAGMA journal_mode=WAL")
        with self._writing():
            _add_columns(self._db)
            for statement in _SCHEMA.split(";"):  # not executescript: it commits first (no ';' in comments)
                if statement.strip():
                    self._db.execute(statement)
            upgraded = upgrade(self._db)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            _fail_unfinished(self._db)
        if upgraded:  # the old rows held whole conversations: give their pages back
            self._db.execute("VACUUM")
            logger.info("responses store %s: converted to schema version %d", self.path, SCHEMA_VERSION)
        self.on_evict = on_evict
        self.size = StoreSize(self._db, max_store_bytes, lambda rid: self._retire("live = 1 AND id = ?", (rid,)),
                              on_evict)
        # Stored chat completions share the file and its limits (their own table, counted apart; the size cap
        # over both).
        self.chat_completions = ChatCompletionStore(self._db, self._lock, max_completions=max_responses,
                                                    max_age_s=max_age_s, max_row_bytes=max_row_bytes,
                                                    size=self.size)
        with self._writing():  # a cap lowered since the file was written
            evicted = self.size.evict()
        with self._lock:
            self.size.reclaim(evicted, checkpoint=True)

    def put(self, response: dict[str, Any], input_items: Sequence[dict[str, Any]] = (),
            previous: History | None = None) -> None:
        """Store `response` with this request's own `input_items`; `previous` is the history of the
        response it continued, kept in this row should that one be gone by now. RowTooLarge (nothing
        written) when the row would be over `max_row_bytes`."""
        outputs = list(response.get("output", []))
        previous_id = response.get("previous_response_id")
        now = time.time()
        with self._writing():
            base = None
            if previous_id is not None and previous is not None and not self._exists(previous_id):
                base = _base(previous.then(input_items, outputs))
            self._insert(response, now, input_items, base)
            aged = self._retire("live = 1 AND created_at < ?", (now - self.max_age_s,))
            over = self._retire("live = 1 AND id NOT IN (SELECT id FROM response WHERE live = 1 "
                                "ORDER BY created_at DESC, rowid DESC LIMIT ?)", (self.max_responses,))
            evicted = self.size.evict(newest_response=response["id"])
        with self._lock:
            self.size.reclaim(evicted)
        self.on_evict("responses", "age", aged)
        self.on_evict("responses", "count", over)

    def get(self, response_id: str) -> dict[str, Any] | None:
        """The Response object (None when unknown, deleted or expired)."""
        with self._lock:
            if not self._live(response_id):
                return None
            row = self._db.execute("SELECT response FROM response WHERE id = ?", (response_id,)).fetchone()
            outputs = self._db.execute("SELECT item FROM response_item WHERE response_id = ? AND output = 1 "
                                       "ORDER BY seq", (response_id,)).fetchall()
        return {**json.loads(row[0]), "output": [json.loads(o[0]) for o in outputs]}

    def runner(self, response_id: str) -> str | None:
        """The process (runner.py) that runs a queued or in-progress background response; None once it has ended
        (or unknown)."""
        with self._lock:
            row = self._db.execute("SELECT runner FROM response WHERE id = ?", (response_id,)).fetchone()
        return row[0] if row is not None else None

    def history(self, response_id: str) -> History | None:
        """The conversation up to and with this response (None when unknown, deleted or expired)."""
        with self._lock:
            return self._history(response_id) if self._live(response_id) else None

    def item(self, item_id: str) -> dict[str, Any] | None:
        """An input or output item of a stored response, by its id (None when unknown or expired)."""
        with self._lock:
            row = self._db.execute("SELECT i.item, r.created_at FROM response_item i JOIN response r "
                                   "ON r.id = i.response_id WHERE i.id = ? AND r.live = 1 "
                                   "ORDER BY r.created_at DESC, i.rowid DESC LIMIT 1", (item_id,)).fetchone()
        if row is None or row[1] < time.time() - self.max_age_s:
            return None
        return json.loads(row[0])

    def delete(self, response_id: str) -> bool:
        """Delete one response; the ones that continued it keep their conversation."""
        with self._writing():
            return self._retire("live = 1 AND id = ?", (response_id,)) > 0

    def __len__(self) -> int:
        """The responses one can get (not those kept only as the beginning of others)."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM response WHERE live = 1").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # Below: called with the lock held (and within a transaction where they write).

    def _exists(self, response_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM response WHERE id = ?", (response_id,)).fetchone() is not None

    def _live(self, response_id: str) -> bool:
        row = self._db.execute("SELECT created_at FROM response WHERE id = ? AND live = 1", (response_id,)).fetchone()
        return row is not None and row[0] >= time.time() - self.max_age_s  # expired before the next write prunes it

    def _insert(self, response: dict[str, Any], created_at: float, inputs: Sequence[dict[str, Any]],
                base: dict[str, Any] | None) -> None:
        response_id, outputs = response["id"], list(response.get("output", []))
        shell, base_json = json.dumps({**response, "output": []}), json.dumps(base) if base is not None else None
        rows = [(response_id, seq, int(seq >= len(inputs)), i.get("id") if isinstance(i.get("id"), str) else None,
                 json.dumps(i)) for seq, i in enumerate([*inputs, *outputs])]
        check_row(len(shell) + len(base_json or "") + sum(len(r[-1]) for r in rows), self.max_row_bytes)
        self._db.execute("DELETE FROM response_item WHERE response_id = ?", (response_id,))
        runner = this_process() if response.get("status") in ("queued", "in_progress") else None
        self._db.execute("INSERT OR REPLACE INTO response (id, created_at, previous_id, response, base, runner) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (response_id, created_at, response.get("previous_response_id"),
                                                       shell, base_json, runner))
        self._db.executemany("INSERT INTO response_item (response_id, seq, output, id, item) VALUES (?, ?, ?, ?, ?)",
                             rows)

    def _retire(self, where: str, args: tuple[Any, ...]) -> int:
        """Take the responses `where` says out of the API; then delete the rows no longer live that no
        stored response walks through, and so on up their chains. The number taken out."""
        self._db.execute("CREATE TEMP TABLE IF NOT EXISTS retired (id TEXT PRIMARY KEY)")
        self._db.execute("DELETE FROM retired")
        self._db.execute(f"INSERT INTO retired SELECT id FROM response WHERE {where}", args)
        count = self._db.execute("UPDATE response SET live = 0 WHERE id IN (SELECT id FROM retired)").rowcount
        while True:
            unneeded = self._db.execute(
                "SELECT id, previous_id, base FROM response r WHERE live = 0 AND id IN (SELECT id FROM retired) "
                "AND NOT EXISTS (SELECT 1 FROM response c WHERE c.previous_id = r.id AND c.base IS NULL)").fetchall()
            if not unneeded:
                return count
            self._db.execute("DELETE FROM retired")
            self._db.executemany("DELETE FROM response_item WHERE response_id = ?", [(u[0],) for u in unneeded])
            self._db.executemany("DELETE FROM response WHERE id = ?", [(u[0],) for u in unneeded])
            self._db.executemany("INSERT OR IGNORE INTO retired VALUES (?)",
                                 [(previous,) for _, previous, base in unneeded if previous and base is None])

    def _chain(self, response_id: str) -> list[_Row]:
        rows: dict[int, _Row] = {}
        for depth, rid, previous_id, base, output, item in self._db.execute(
                _CHAIN, (response_id, _MAX_CHAIN)):
            row = rows.get(depth)
            if row is None:
                row = rows[depth] = _Row(rid, previous_id, json.loads(base) if base else None, [], [])
            if item is not None:
                (row.outputs if output else row.inputs).append(json.loads(item))
        return [rows[d] for d in sorted(rows, reverse=True)]

    def _history(self, response_id: str) -> History:
        messages: list[dict[str, Any]] = []
        items: list[dict[str, Any]] = []
        chain = self._chain(response_id)
        if chain[0].base is None and chain[0].previous_id is not None:  # only if the file was changed behind us
            logger.warning("stored response %s continues %s, which is gone: its conversation starts there",
                           chain[0].id, chain[0].previous_id)
        for row in chain:
            if row.base is not None:  # the first: its base holds its input and its answer's messages
                messages += row.base["messages"]
                items += [*row.base["input_items"], *row.outputs]
            else:
                messages += [*items_to_messages(row.inputs), *items_to_messages(row.outputs)]
                items += [*row.inputs, *row.outputs]
        return History(messages, items, len(chain[-1].outputs))


# What a background response that no process runs any more reads as (api/responses_background.py).
INTERRUPTED = {"code": "server_error", "message": "The server stopped before the response finished."}


# The rows a process runs: every put of a queued or in-progress response names its runner (a schema 3 file has none:
# no background responses). Read through the partial index at each open, not by reading every row's JSON.
UNFINISHED = "SELECT id, runner FROM response WHERE runner IS NOT NULL"


def _fail_unfinished(db: sqlite3.Connection) -> None:
    """Background responses a process left queued or in progress and is no longer there to end (it was killed)
    are failed; else they said in_progress for ever, to a client polling for the end. Those of a server still
    running (sharing the file) are its own."""
    rows = db.execute(UNFINISHED).fetchall()
    gone = [(json.dumps(INTERRUPTED), rid) for rid, runner in rows if not is_running(runner)]
    num_rows = db.executemany(
        "UPDATE response SET runner = NULL, response = json_set(response, '$.status', 'failed', '$.error', json(?)) "
        "WHERE id = ? AND json_extract(response, '$.status') IN ('queued', 'in_progress')", gone).rowcount
    if num_rows > 0:
        logger.warning("responses store: %d background response(s) left unfinished by a stopped server marked failed",
                       num_rows)


def _add_columns(db: sqlite3.Connection) -> None:
    """Schema version 2 had no `live`: its pruned rows were folded into a base of the next one. Version 3 had no
    `runner` (no background responses)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(response)")}
    if columns and "live" not in columns:
        db.execute("ALTER TABLE response ADD COLUMN live INTEGER NOT NULL DEFAULT 1")
        db.execute("DROP INDEX IF EXISTS response_created_at")
    if columns and "runner" not in columns:
        db.execute("ALTER TABLE response ADD COLUMN runner TEXT")


def _base(history: History) -> dict[str, Any]:
    return {"messages": history.messages, "input_items": history.input_items}
