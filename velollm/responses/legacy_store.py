"""The responses store as VeloLLM wrote it before schema version 2, converted on open.

That layout kept in each `responses` row the whole chat conversation up to it (`conversation`) and the
whole input_items list (`input_items`, a column older files lack), and an `items` table of item ids for
item_reference. Each old row becomes a row of the new layout whose `base` is what it held, so it ends
the walk of a chain (its own inputs need not be split from the earlier turns'); its output items come
from its Response object, and the items it held by id stay referable.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any


def _tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def upgrade(db: sqlite3.Connection) -> bool:
    """Convert the old tables into `response` / `response_item` (within the caller's transaction);
    False when there were none."""
    tables = _tables(db)
    if "responses" not in tables:
        return False
    columns = {row[1] for row in db.execute("PRAGMA table_info(responses)")}
    inputs = "input_items" if "input_items" in columns else "'[]'"
    referable: dict[str, list[tuple[str, str]]] = {}
    if "items" in tables:
        for item_id, response_id, item in db.execute("SELECT id, response_id, item FROM items"):
            referable.setdefault(response_id, []).append((item_id, item))
    for response_id, created_at, text, conversation, input_items in db.execute(
            f"SELECT id, created_at, response, conversation, {inputs} FROM responses"):  # one at a time: they are big
        _convert(db, response_id, created_at, json.loads(text), conversation, input_items,
                 referable.get(response_id, []))
    db.execute("DROP TABLE responses")
    db.execute("DROP TABLE IF EXISTS items")
    return True


def _convert(db: sqlite3.Connection, response_id: str, created_at: float, response: dict[str, Any],
             conversation: str, input_items: str, referable: list[tuple[str, str]]) -> None:
    outputs = [o for o in response.get("output") or [] if isinstance(o, dict)]
    base = f'{{"messages": {conversation}, "input_items": {input_items}}}'  # both JSON arrays already
    db.execute("INSERT OR REPLACE INTO response (id, created_at, previous_id, response, base) VALUES (?, ?, ?, ?, ?)",
               (response_id, created_at, response.get("previous_response_id"),
                json.dumps({**response, "output": []}), base))
    output_ids = {o.get("id") for o in outputs}
    # Items held by id that are not its output: referable only (its base lists its inputs).
    kept = [(item_id, item) for item_id, item in referable if item_id not in output_ids]
    rows = [(response_id, seq, 0, item_id, item) for seq, (item_id, item) in enumerate(kept)]
    rows += [(response_id, len(kept) + seq, 1, o.get("id") if isinstance(o.get("id"), str) else None, json.dumps(o))
             for seq, o in enumerate(outputs)]
    db.executemany("INSERT INTO response_item (response_id, seq, output, id, item) VALUES (?, ?, ?, ?, ?)", rows)
