"""ResponseStore: round trip, chains rebuilt from their rows, retention by count and age (a live chain
keeps its beginning), deletion, item ids, survives a reopen, old files converted."""

from __future__ import annotations

import json
import sqlite3
import time

import velollm.responses.chat_store
import velollm.responses.store
from tests.wall_clock import wall_clock
from velollm.responses import ResponseStore


def _resp(i: int, previous: int | None = None, output: list | None = None) -> dict:
    return {"id": f"resp_{i}", "object": "response", "output": output or [],
            "previous_response_id": f"resp_{previous}" if previous is not None else None}


def _user(text: str, i: int = 0) -> dict:
    return {"id": f"msg_u{i}_{text}", "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": text}]}


def _said(text: str) -> dict:
    return {"id": f"msg_a_{text}", "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def _chain(store: ResponseStore, n: int) -> None:
    """resp_0 <- resp_1 <- ... : turn i says q<i>, answers a<i>."""
    for i in range(n):
        store.put(_resp(i, i - 1 if i else None, [_said(f"a{i}")]), [_user(f"q{i}")],
                  store.history(f"resp_{i - 1}") if i else None)


def _texts(messages: list[dict]) -> list[str]:
    return [m["content"] for m in messages]


def test_round_trip_and_reopen(tmp_path):
    store = ResponseStore(tmp_path / "r.sqlite")
    store.put(_resp(1, output=[_said("yo")]), [_user("hi")])
    assert store.get("resp_1") == _resp(1, output=[_said("yo")])
    assert store.history("resp_1").messages == [{"role": "user", "content": "hi"},
                                                {"role": "assistant", "content": "yo"}]
    assert store.get("resp_2") is None and store.history("resp_2") is None
    store.close()
    again = ResponseStore(tmp_path / "r.sqlite")
    assert again.history("resp_1").input_items == [_user("hi")]
    assert again.delete("resp_1") and not again.delete("resp_1") and again.get("resp_1") is None


def test_a_chain_is_rebuilt_from_rows_of_their_own_items(tmp_path):
    store = ResponseStore(tmp_path / "r.sqlite")
    _chain(store, 3)
    history = store.history("resp_2")
    assert _texts(history.messages) == ["q0", "a0", "q1", "a1", "q2", "a2"]
    assert [i["id"] for i in history.input_items] == ["msg_u0_q0", "msg_a_a0", "msg_u0_q1", "msg_a_a1", "msg_u0_q2"]
    assert [i["id"] for i in store.history("resp_0").input_items] == ["msg_u0_q0"]
    db = sqlite3.connect(tmp_path / "r.sqlite")  # each row: its own input and output, nothing earlier
    assert db.execute("SELECT COUNT(*) FROM response_item WHERE response_id = 'resp_2'").fetchone()[0] == 2
    assert db.execute("SELECT COUNT(*) FROM response WHERE base IS NOT NULL").fetchone()[0] == 0


def test_keeps_at_most_max_responses_newest_first(tmp_path):
    store = ResponseStore(tmp_path / "r.sqlite", max_responses=3)
    for i in range(5):
        store.put(_resp(i), [])
    assert len(store) == 3
    assert store.get("resp_0") is None and store.get("resp_1") is None
    assert store.get("resp_4") is not None and store.get("resp_2") is not None


def _rows(path) -> list[tuple[str, int]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT id, live FROM response ORDER BY created_at").fetchall()
    finally:
        db.close()


def test_a_pruned_response_stays_as_the_beginning_of_a_live_chain(tmp_path):
    """Evicting the start of a live chain must not cut its conversation short."""
    store = ResponseStore(tmp_path / "r.sqlite", max_responses=2)
    _chain(store, 5)
    assert len(store) == 2 and store.get("resp_2") is None and store.history("resp_2") is None
    assert store.item("msg_a_a2") is None  # gone from the API at once
    assert _texts(store.history("resp_4").messages) == [f"{k}{i}" for i in range(5) for k in "qa"]
    assert len(store.history("resp_4").input_items) == 9
    assert _rows(tmp_path / "r.sqlite") == [("resp_0", 0), ("resp_1", 0), ("resp_2", 0), ("resp_3", 1), ("resp_4", 1)]
    store.put(_resp(9, 4, [_said("a9")]), [_user("q9")], store.history("resp_4"))  # resp_3 goes now
    assert _texts(store.history("resp_9").messages) == [f"{k}{i}" for i in (0, 1, 2, 3, 4, 9) for k in "qa"]
    store.put(_resp(10), [])
    store.put(_resp(11), [])  # the chain's last response is pruned: its rows go, all of them
    assert _rows(tmp_path / "r.sqlite") == [("resp_10", 1), ("resp_11", 1)]
    db = sqlite3.connect(tmp_path / "r.sqlite")
    assert db.execute("SELECT COUNT(*) FROM response_item").fetchone()[0] == 0


def test_a_branch_keeps_what_it_continued(tmp_path):
    """Two responses continue one: deleting one branch leaves the other whole."""
    store = ResponseStore(tmp_path / "r.sqlite")
    _chain(store, 2)
    store.put(_resp(7, 0, [_said("b1")]), [_user("p1")], store.history("resp_0"))
    assert store.delete("resp_0") and store.delete("resp_1")
    assert _texts(store.history("resp_7").messages) == ["q0", "a0", "p1", "b1"]
    assert _rows(tmp_path / "r.sqlite") == [("resp_0", 0), ("resp_7", 1)]
    assert store.delete("resp_7") and _rows(tmp_path / "r.sqlite") == []


def test_old_responses_expire(tmp_path, monkeypatch):
    clock = wall_clock(monkeypatch, velollm.responses.store)
    store = ResponseStore(tmp_path / "r.sqlite", max_age_s=0.2)
    store.put(_resp(1), [])
    assert store.get("resp_1") is not None
    clock.advance(0.3)
    assert store.get("resp_1") is None and store.history("resp_1") is None  # before the next write prunes it
    store.put(_resp(2), [])
    assert len(store) == 1


def test_deleting_a_response_keeps_the_ones_that_continued_it_whole(tmp_path):
    store = ResponseStore(tmp_path / "r.sqlite")
    _chain(store, 3)
    assert store.delete("resp_1") and store.get("resp_1") is None
    assert _texts(store.history("resp_2").messages) == ["q0", "a0", "q1", "a1", "q2", "a2"]
    assert _texts(store.history("resp_0").messages) == ["q0", "a0"]
    assert store.item("msg_a_a1") is None and store.item("msg_a_a2") == _said("a2")  # its items went with it
    assert not store.delete("resp_1") and store.history("resp_1") is None


def test_a_previous_response_gone_before_the_answer_is_stored(tmp_path):
    """Deleted while the turn that continues it was being answered: the turn keeps what it was given."""
    store = ResponseStore(tmp_path / "r.sqlite")
    _chain(store, 1)
    history = store.history("resp_0")
    store.delete("resp_0")
    store.put(_resp(1, 0, [_said("a1")]), [_user("q1")], history)
    assert _texts(store.history("resp_1").messages) == ["q0", "a0", "q1", "a1"]


def test_items_by_id_follow_their_response(tmp_path):
    """item_reference input items name a stored response's input or output items by id."""
    store = ResponseStore(tmp_path / "r.sqlite", max_responses=1)
    said = _user("hi")
    call = {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"}
    store.put(_resp(1, output=[call]), [said])
    assert store.item(said["id"]) == said and store.item("fc_1") == call and store.item("nope") is None
    store.put(_resp(2), [])  # resp_1 is pruned (max_responses=1): its items go with it
    assert store.item("fc_1") is None
    store.put(_resp(3, output=[call]), [])
    assert store.delete("resp_3") and store.item("fc_1") is None


def test_the_same_item_id_in_two_responses(tmp_path):
    """A client may replay an output item, id and all: each response keeps its own copy."""
    store = ResponseStore(tmp_path / "r.sqlite")
    store.put(_resp(1, output=[_said("x")]), [_user("q")])
    store.put(_resp(2, output=[_said("y")]), [_user("q"), _said("x")])
    assert store.get("resp_1")["output"] == [_said("x")] and len(store.history("resp_2").input_items) == 2
    assert store.delete("resp_2") and store.item("msg_a_x") == _said("x")


# The layout before schema version 2 (velollm/responses/store.py until then), as that code wrote it.
_OLD_SCHEMA = """
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


def _old_put(db: sqlite3.Connection, response: dict, conversation: list, input_items: list) -> None:
    db.execute("INSERT OR REPLACE INTO responses (id, created_at, response, conversation, input_items) "
               "VALUES (?, ?, ?, ?, ?)", (response["id"], time.time(), json.dumps(response),
                                          json.dumps(conversation), json.dumps(input_items)))
    db.executemany("INSERT OR REPLACE INTO items (id, response_id, item) VALUES (?, ?, ?)",
                   [(i["id"], response["id"], json.dumps(i)) for i in [*input_items, *response["output"]]])


def test_a_file_of_the_old_layout_is_converted_on_open(tmp_path):
    old = sqlite3.connect(tmp_path / "old.sqlite")
    old.executescript(_OLD_SCHEMA)
    first, second = _resp(0, output=[_said("a0")]), _resp(1, 0, [_said("a1")])
    conv = [{"role": "user", "content": "q0"}, {"role": "assistant", "content": "a0"}]
    _old_put(old, first, conv, [_user("q0")])
    _old_put(old, second, [*conv, {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}],
             [_user("q0"), _said("a0"), _user("q1")])
    old.commit()
    old.close()
    store = ResponseStore(tmp_path / "old.sqlite", max_responses=3)
    assert store.get("resp_1") == second and store.get("resp_0") == first
    assert _texts(store.history("resp_1").messages) == ["q0", "a0", "q1", "a1"]
    assert [i["id"] for i in store.history("resp_1").input_items] == ["msg_u0_q0", "msg_a_a0", "msg_u0_q1"]
    assert store.item("msg_u0_q1") == _user("q1") and store.item("msg_a_a1") == _said("a1")
    store.put(_resp(2, 1, [_said("a2")]), [_user("q2")], store.history("resp_1"))  # a new turn on an old one
    assert _texts(store.history("resp_2").messages) == ["q0", "a0", "q1", "a1", "q2", "a2"]
    assert len(store.history("resp_2").input_items) == 5
    store.put(_resp(3), [])  # resp_0 pruned: nothing walks through it (resp_1 holds all it needs)
    store.put(_resp(4), [])  # resp_1 pruned: kept as the beginning of resp_2
    assert _texts(store.history("resp_2").messages) == ["q0", "a0", "q1", "a1", "q2", "a2"]
    assert [r[0] for r in _rows(tmp_path / "old.sqlite")] == ["resp_1", "resp_2", "resp_3", "resp_4"]
    store.close()
    tables = {r[0] for r in sqlite3.connect(tmp_path / "old.sqlite").execute("SELECT name FROM sqlite_master")}
    assert "responses" not in tables and "items" not in tables


def test_a_file_from_before_input_items_were_kept(tmp_path):
    old = sqlite3.connect(tmp_path / "old.sqlite")
    old.execute("CREATE TABLE responses (id TEXT PRIMARY KEY, created_at REAL NOT NULL, response TEXT NOT NULL, "
                "conversation TEXT NOT NULL)")
    old.execute("INSERT INTO responses VALUES ('resp_0', ?, '{\"id\": \"resp_0\"}', '[]')", (time.time(),))
    old.commit()
    old.close()
    store = ResponseStore(tmp_path / "old.sqlite")
    assert store.history("resp_0").input_items == [] and store.get("resp_0") == {"id": "resp_0", "output": []}
    store.put(_resp(1), [_user("hi")])
    assert store.history("resp_1").input_items == [_user("hi")]


def test_a_file_of_schema_version_2(tmp_path):
    """Version 2 (rows of new items, no `live`: pruned rows folded into a base of the next one)."""
    v2 = sqlite3.connect(tmp_path / "v2.sqlite")
    v2.executescript("""
        CREATE TABLE response (id TEXT PRIMARY KEY, created_at REAL NOT NULL, previous_id TEXT,
                               response TEXT NOT NULL, base TEXT);
        CREATE INDEX response_created_at ON response (created_at);
        CREATE INDEX response_previous_id ON response (previous_id);
        CREATE TABLE response_item (response_id TEXT NOT NULL, seq INTEGER NOT NULL, output INTEGER NOT NULL,
                                    id TEXT, item TEXT NOT NULL, PRIMARY KEY (response_id, seq));
        CREATE INDEX response_item_id ON response_item (id);
        PRAGMA user_version = 2;""")
    base = {"messages": [{"role": "user", "content": "q0"}, {"role": "assistant", "content": "a0"},
                         {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}],
            "input_items": [_user("q0"), _said("a0"), _user("q1")]}
    v2.execute("INSERT INTO response VALUES ('resp_1', ?, 'resp_0', ?, ?)",
               (time.time(), json.dumps({**_resp(1, 0), "output": []}), json.dumps(base)))
    v2.executemany("INSERT INTO response_item VALUES ('resp_1', ?, ?, ?, ?)",
                   [(0, 0, "msg_u0_q1", json.dumps(_user("q1"))), (1, 1, "msg_a_a1", json.dumps(_said("a1")))])
    v2.commit()
    v2.close()
    store = ResponseStore(tmp_path / "v2.sqlite")
    assert store.get("resp_1") == _resp(1, 0, [_said("a1")]) and len(store) == 1
    assert _texts(store.history("resp_1").messages) == ["q0", "a0", "q1", "a1"]
    assert len(store.history("resp_1").input_items) == 3
    assert store.delete("resp_1") and _rows(tmp_path / "v2.sqlite") == []


def _completion(i: int, model: str = "m") -> dict:
    return {"id": f"chatcmpl-{i}", "object": "chat.completion", "model": model, "choices": []}


def test_chat_completions_share_the_file_and_its_limits(tmp_path):
    store = ResponseStore(tmp_path / "r.sqlite", max_responses=3)
    chats = store.chat_completions
    for i in range(5):
        chats.put(_completion(i, "a" if i % 2 else "b"), [{"role": "user", "content": str(i)}], {"n": str(i % 2)})
    store.put(_resp(1), [])
    assert len(chats) == 3 and len(store) == 1  # each kind counted apart
    assert chats.get("chatcmpl-1") is None and chats.get("chatcmpl-4")["metadata"] == {"n": "0"}
    assert chats.messages("chatcmpl-3") == [{"role": "user", "content": "3"}]
    assert [c["id"] for c in chats.list(limit=10).data] == ["chatcmpl-2", "chatcmpl-3", "chatcmpl-4"]
    desc = chats.list(limit=1, order="desc")
    assert [c["id"] for c in desc.data] == ["chatcmpl-4"] and desc.has_more
    assert [c["id"] for c in chats.list(limit=5, order="desc", after="chatcmpl-4").data] == ["chatcmpl-3", "chatcmpl-2"]
    assert [c["id"] for c in chats.list(limit=5, model="a").data] == ["chatcmpl-3"]
    assert [c["id"] for c in chats.list(limit=5, metadata={"n": "0"}).data] == ["chatcmpl-2", "chatcmpl-4"]
    assert chats.update_metadata("chatcmpl-4", {"x": "y"})["metadata"] == {"x": "y"}
    assert chats.list(limit=5, metadata={"n": "0"}).data[-1]["id"] == "chatcmpl-2"
    assert chats.update_metadata("chatcmpl-9", {}) is None
    store.close()
    again = ResponseStore(tmp_path / "r.sqlite")
    assert again.chat_completions.get("chatcmpl-4")["metadata"] == {"x": "y"}
    assert again.chat_completions.delete("chatcmpl-4") and not again.chat_completions.delete("chatcmpl-4")


def test_stored_chat_completions_expire(tmp_path, monkeypatch):
    clock = wall_clock(monkeypatch, velollm.responses.chat_store)
    chats = ResponseStore(tmp_path / "r.sqlite", max_age_s=0.2).chat_completions
    chats.put(_completion(1), [], {})
    assert chats.get("chatcmpl-1") is not None
    clock.advance(0.3)
    assert chats.get("chatcmpl-1") is None and chats.list(limit=5).data == []


def _image_message(num_base64: int) -> dict:
    url = "data:image/png;base64," + "A" * num_base64
    return {"role": "user", "content": [{"type": "text", "text": "What is it?"},
                                        {"type": "image_url", "image_url": {"url": url}}]}


def test_a_row_over_the_cap_is_not_stored_in_either_table(tmp_path):
    """The per-row cap counts a row as stored (its JSON): a base64 image by its base64 bytes."""
    import pytest

    from velollm.responses import RowTooLarge

    store = ResponseStore(tmp_path / "r.sqlite", max_row_bytes=4096)
    store.put(_resp(0, output=[_said("short")]), [_user("q")])
    with pytest.raises(RowTooLarge) as caught:
        store.put(_resp(1, 0, [_said("a" * 4096)]), [_user("q1")], store.history("resp_0"))
    assert caught.value.num_bytes > 4096 and caught.value.max_bytes == 4096
    assert store.get("resp_1") is None and store.item("msg_a_" + "a" * 4096) is None and len(store) == 1
    assert store.get("resp_0") is not None  # the transaction rolled back whole
    chats = store.chat_completions
    completion = {"id": "chatcmpl-1", "object": "chat.completion", "model": "m", "choices": []}
    chats.put(completion, [_image_message(3000)], {})
    with pytest.raises(RowTooLarge) as caught:
        chats.put({**completion, "id": "chatcmpl-2"}, [_image_message(4096)], {})
    assert caught.value.num_bytes > 4096 + len("data:image/png;base64,")
    assert chats.get("chatcmpl-2") is None and chats.get("chatcmpl-1") is not None and len(chats) == 1
    store.close()
    with pytest.raises(ValueError):
        ResponseStore(tmp_path / "r.sqlite", max_row_bytes=0)


def _runner_gone(path, runner: str = "999999999@1.00") -> None:
    """The rows' runner made a process that is not there (a server killed since)."""
    db = sqlite3.connect(path)
    db.execute("UPDATE response SET runner = ? WHERE runner IS NOT NULL", (runner,))
    db.commit()
    db.close()


def test_a_background_response_left_running_by_a_stopped_server_reads_failed_when_reopened(tmp_path):
    store = ResponseStore(tmp_path / "r.sqlite")
    for i, status in enumerate(("queued", "in_progress", "completed", "cancelled")):
        store.put({**_resp(i), "status": status, "background": True, "error": None}, [_user("q")])
    store.close()
    _runner_gone(tmp_path / "r.sqlite")
    store = ResponseStore(tmp_path / "r.sqlite")  # a new process: it runs none of them
    got = [store.get(f"resp_{i}") for i in range(4)]
    assert [r["status"] for r in got] == ["failed", "failed", "completed", "cancelled"]
    assert got[0]["error"] == got[1]["error"] == {"code": "server_error",
                                                  "message": "The server stopped before the response finished."}
    assert got[2]["error"] is None and store.history("resp_1").input_items[0]["content"][0]["text"] == "q"


def test_a_background_response_a_running_server_holds_is_left_to_it(tmp_path):
    """Servers sharing one store file (one cache directory): a server's start fails only the unfinished rows of a
    process that is gone, not those another server is running (a pid now another process's is gone too)."""
    import os

    running = ResponseStore(tmp_path / "r.sqlite")
    running.put({**_resp(0), "status": "in_progress", "background": True, "error": None})
    assert ResponseStore(tmp_path / "r.sqlite").get("resp_0")["status"] == "in_progress"  # its runner is here
    running.put({**_resp(0), "status": "completed", "background": True, "error": None})  # and ends it
    running.put({**_resp(1), "status": "queued", "background": True, "error": None})
    running.close()
    _runner_gone(tmp_path / "r.sqlite", f"{os.getpid()}@1.00")  # this pid, but not the process that started then
    store = ResponseStore(tmp_path / "r.sqlite")
    assert [store.get(f"resp_{i}")["status"] for i in range(2)] == ["completed", "failed"]


def test_a_version_3_file_gets_the_runner_column(tmp_path):
    db = sqlite3.connect(tmp_path / "r.sqlite")
    db.executescript("""
        CREATE TABLE response (id TEXT PRIMARY KEY, created_at REAL NOT NULL, previous_id TEXT, response TEXT NOT NULL,
                               base TEXT, live INTEGER NOT NULL DEFAULT 1);
        CREATE TABLE response_item (response_id TEXT NOT NULL, seq INTEGER NOT NULL, output INTEGER NOT NULL, id TEXT,
                                    item TEXT NOT NULL, PRIMARY KEY (response_id, seq));
        INSERT INTO response (id, created_at, response)
            VALUES ('resp_0', 1e10, '{"id": "resp_0", "status": "completed"}');
        PRAGMA user_version = 3;""")
    db.close()
    store = ResponseStore(tmp_path / "r.sqlite")
    store.put({**_resp(1), "status": "queued", "background": True})
    assert store.get("resp_0")["status"] == "completed" and store.get("resp_1")["status"] == "queued"


def test_the_unfinished_rows_are_found_without_reading_every_response(tmp_path):
    """Each open looks for the rows a stopped server left running: through the partial index of the runners, not a
    scan of every row's JSON (50,000 rows of 8 KB: 1.4-1.8 s at each start, against 0.02 s)."""
    from velollm.responses.store import UNFINISHED

    ResponseStore(tmp_path / "r.sqlite").put({**_resp(0), "status": "queued", "background": True})
    db = sqlite3.connect(tmp_path / "r.sqlite")
    plan = " ".join(str(row[-1]) for row in db.execute(f"EXPLAIN QUERY PLAN {UNFINISHED}"))
    assert "USING INDEX response_runner" in plan or "USING COVERING INDEX response_runner" in plan, plan
    assert db.execute(UNFINISHED).fetchall()[0][0] == "resp_0"
