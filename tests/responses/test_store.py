"""ResponseStore: round trip, retention by count and age, survives a reopen."""

from __future__ import annotations

import time

from velollm.responses import ResponseStore


def _resp(i: int) -> dict:
    return {"id": f"resp_{i}", "object": "response", "output": []}


def test_round_trip_and_reopen(tmp_path):
    store = ResponseStore(tmp_path / "r.sqlite")
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    store.put(_resp(1), conversation)
    got = store.get("resp_1")
    assert got.response == _resp(1) and got.conversation == conversation
    assert store.get("resp_2") is None
    store.close()
    again = ResponseStore(tmp_path / "r.sqlite")
    assert again.get("resp_1").conversation == conversation
    assert again.delete("resp_1") and not again.delete("resp_1") and again.get("resp_1") is None


def test_keeps_at_most_max_responses_newest_first(tmp_path):
    store = ResponseStore(tmp_path / "r.sqlite", max_responses=3)
    for i in range(5):
        store.put(_resp(i), [])
    assert len(store) == 3
    assert store.get("resp_0") is None and store.get("resp_1") is None
    assert store.get("resp_4") is not None and store.get("resp_2") is not None


def test_old_responses_expire(tmp_path):
    store = ResponseStore(tmp_path / "r.sqlite", max_age_s=0.2)
    store.put(_resp(1), [])
    assert store.get("resp_1") is not None
    time.sleep(0.3)
    assert store.get("resp_1") is None  # expired even before the next write prunes it
    store.put(_resp(2), [])
    assert len(store) == 1


def test_input_items_kept_and_old_files_upgraded(tmp_path):
    import sqlite3

    old = sqlite3.connect(tmp_path / "old.sqlite")  # the table as written before input items were kept
    old.execute("CREATE TABLE responses (id TEXT PRIMARY KEY, created_at REAL NOT NULL, response TEXT NOT NULL, "
                "conversation TEXT NOT NULL)")
    old.execute("INSERT INTO responses VALUES ('resp_0', ?, '{\"id\": \"resp_0\"}', '[]')", (time.time(),))
    old.commit()
    old.close()
    store = ResponseStore(tmp_path / "old.sqlite")
    assert store.get("resp_0").input_items == []
    items = [{"id": "msg_1", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]
    store.put(_resp(1), [], items)
    assert store.get("resp_1").input_items == items


def test_items_by_id_follow_their_response(tmp_path):
    """item_reference input items name a stored response's input or output items by id."""
    store = ResponseStore(tmp_path / "r.sqlite", max_responses=1)
    said = {"id": "msg_in", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    call = {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"}
    store.put({**_resp(1), "output": [call]}, [], [said])
    assert store.item("msg_in") == said and store.item("fc_1") == call and store.item("nope") is None
    store.put(_resp(2), [])  # resp_1 is pruned (max_responses=1): its items go with it
    assert store.item("fc_1") is None
    store.put({**_resp(3), "output": [call]}, [])
    assert store.delete("resp_3") and store.item("fc_1") is None


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


def test_stored_chat_completions_expire(tmp_path):
    chats = ResponseStore(tmp_path / "r.sqlite", max_age_s=0.2).chat_completions
    chats.put(_completion(1), [], {})
    time.sleep(0.3)
    assert chats.get("chatcmpl-1") is None and chats.list(limit=5).data == []
