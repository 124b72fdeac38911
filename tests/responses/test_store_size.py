"""The store's total size cap (StoreSize, max_store_bytes): the oldest rows of both tables go after a write
that takes the file over it, a kept response keeps the turns it continues, the newest row stays, the
freed pages go back to the file system (the file and its WAL measured on disk), an older file is converted
to incremental auto_vacuum and a lowered cap applies on open; each eviction counted, by limit."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from velollm.responses import ResponseStore

CAP = 256 << 10
ROW = 20_000  # characters of text in one row: about a dozen fit under CAP


def _resp(i: int, previous: int | None = None, text: str = "") -> dict:
    said = {"id": f"msg_a{i}", "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text or f"a{i}", "annotations": []}]}
    return {"id": f"resp_{i}", "object": "response", "output": [said],
            "previous_response_id": f"resp_{previous}" if previous is not None else None}


def _user(i: int) -> dict:
    return {"id": f"msg_u{i}", "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": f"q{i}"}]}


def _completion(i: int) -> dict:
    return {"id": f"chatcmpl-{i}", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "c" * ROW}}]}


def _on_disk(path: Path) -> int:
    """The file and its WAL, as the file system holds them."""
    wal = Path(f"{path}-wal")
    return os.path.getsize(path) + (os.path.getsize(wal) if wal.exists() else 0)


class Evictions:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def __call__(self, store: str, limit: str, num_rows: int) -> None:
        self.counts[store, limit] = self.counts.get((store, limit), 0) + num_rows


def test_the_oldest_rows_of_both_tables_go_and_the_file_shrinks(tmp_path):
    path, evictions = tmp_path / "r.sqlite", Evictions()
    store = ResponseStore(path, max_store_bytes=CAP, on_evict=evictions)
    for i in range(40):  # a response and a chat completion in turn, each about ROW bytes
        if i % 2:
            store.chat_completions.put(_completion(i), [{"role": "user", "content": "hi"}], {})
        else:
            store.put(_resp(i, text="r" * ROW), [_user(i)])
        assert os.path.getsize(path) <= CAP + 2 * ROW  # at most the newest row over
        assert _on_disk(path) <= CAP + CAP // 16 + 2 * ROW  # and a WAL checkpointed at a 16th of the cap
    kept_responses = [i for i in range(0, 40, 2) if store.get(f"resp_{i}") is not None]
    kept_completions = [i for i in range(1, 40, 2) if store.chat_completions.get(f"chatcmpl-{i}") is not None]
    kept = sorted(kept_responses + kept_completions)
    assert kept == list(range(kept[0], 40)) and 6 <= len(kept) <= 14  # the newest, in one run, both tables
    assert evictions.counts["responses", "size"] == 20 - len(kept_responses)
    assert evictions.counts["chat_completions", "size"] == 20 - len(kept_completions)
    assert evictions.counts["responses", "count"] == 0
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    db.close()
    store.close()
    assert os.path.getsize(path) <= CAP + ROW


def test_a_kept_response_keeps_the_turns_it_continues(tmp_path):
    """The evicted turns of a kept conversation are gone from the API (404), not from the conversation:
    previous_response_id on the kept one continues the whole of it, as after a count eviction."""
    store = ResponseStore(tmp_path / "r.sqlite", max_store_bytes=CAP)
    store.put(_resp(0, text="first"), [_user(0)])
    for i in range(1, 30):
        if i % 3 == 0:  # the conversation goes on now and then, between large rows of other clients
            previous = i - 3 if i > 3 else 0
            store.put(_resp(i, previous, f"turn {i}"), [_user(i)], store.history(f"resp_{previous}"))
        else:
            store.chat_completions.put(_completion(i), [], {})
    assert store.get("resp_0") is None and store.get("resp_3") is None  # evicted: out of the API
    assert store.chat_completions.get("chatcmpl-1") is None and store.chat_completions.get("chatcmpl-29") is not None
    history = store.history("resp_27")
    assert [m["content"] for m in history.messages][:4] == ["q0", "first", "q3", "turn 3"]
    assert len(history.messages) == 2 * 10


def test_the_newest_row_stays_even_alone_over_the_cap(tmp_path):
    store = ResponseStore(tmp_path / "r.sqlite", max_store_bytes=64 << 10)
    store.chat_completions.put(_completion(1), [], {})
    store.put(_resp(2, text="r" * (100 << 10)), [_user(2)])
    assert store.chat_completions.get("chatcmpl-1") is None and store.get("resp_2") is not None
    store.chat_completions.put(_completion(3), [], {})
    assert store.get("resp_2") is None and store.chat_completions.get("chatcmpl-3") is not None


def test_an_older_file_is_converted_and_a_lowered_cap_applies_on_open(tmp_path):
    path = tmp_path / "r.sqlite"
    old = sqlite3.connect(path)  # a file as VeloLLM wrote it before the size cap: no auto_vacuum
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE keep_me (x)")
    old.close()
    store = ResponseStore(path)
    for i in range(30):
        store.put(_resp(i, text="r" * ROW), [_user(i)])
    store.close()
    assert os.path.getsize(path) > 2 * CAP
    evictions = Evictions()
    again = ResponseStore(path, max_store_bytes=CAP, on_evict=evictions)
    assert again.get("resp_0") is None and again.get("resp_29") is not None
    assert 6 <= len(again) <= 14 and evictions.counts["responses", "size"] == 30 - len(again)
    assert _on_disk(path) <= CAP
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    db.close()


def test_the_count_and_age_limits_report_their_evictions_too(tmp_path):
    evictions = Evictions()
    store = ResponseStore(tmp_path / "r.sqlite", max_responses=2, on_evict=evictions)
    for i in range(5):
        store.put(_resp(i), [_user(i)])
        store.chat_completions.put({**_completion(i), "choices": []}, [], {})
    assert evictions.counts["responses", "count"] == 3 and evictions.counts["chat_completions", "count"] == 3
    store.max_age_s = store.chat_completions.max_age_s = 1e-9  # everything before the next write is past it
    store.put(_resp(9), [])
    store.chat_completions.put({**_completion(9), "choices": []}, [], {})
    assert evictions.counts["responses", "age"] == 2 and evictions.counts["chat_completions", "age"] == 2
    assert evictions.counts.get(("responses", "size"), 0) == 0
