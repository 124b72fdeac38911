"""The Responses store as the routes reach it: opened at start-up when its file exists (a conversion it needs runs
before the server listens), else at first use, and called in a worker thread (sqlite blocks). The stored chat
completions share it (stored_chat.py)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from velollm.api.handler import AppState
from velollm.responses import ResponseStore

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


def _open(state: AppState) -> ResponseStore:
    c = state.config
    return ResponseStore(c.responses_db, max_responses=c.responses_max, max_age_s=c.responses_max_age_s,
                         max_row_bytes=c.responses_max_row_bytes, max_store_bytes=c.responses_max_store_bytes,
                         on_evict=state.metrics.observe_store_eviction)


async def open_existing_store(state: AppState) -> None:
    """At start-up, before the server listens: a store file that exists is opened now, so that what its first
    open may do (an older file converted to incremental auto_vacuum or to the current schema, each one VACUUM
    of the whole file; a lowered size cap applied) runs alone, holding up no request (it runs in a worker
    thread; a new file is made on first use, at once). A file that cannot be opened is left to the first
    request, whose error says why (the server serves on)."""
    path = state.config.responses_db
    if state.responses is not None or path == ":memory:" or not Path(path).is_file():
        return
    try:
        state.responses = await asyncio.to_thread(_open, state)
    except (sqlite3.Error, OSError) as e:
        logger.error("responses store %s could not be opened at start-up: %s", path, e)


async def in_store(state: AppState, call: Callable[..., _T], *args: Any) -> _T:
    """`call(store, *args)` in a worker thread; the store is opened in one too, when start-up did not open it
    (open_existing_store: a new file, or one that failed then). Also the stored chat completions' way in
    (stored_chat.py)."""
    if state.responses is None:
        store = await asyncio.to_thread(_open, state)
        if state.responses is None:
            state.responses = store
        else:  # another request opened it meanwhile
            store.close()
    return await asyncio.to_thread(call, state.responses, *args)
