"""Stored /v1/responses chains through the openai SDK, on the scripted stub with the store in a file:
the conversation rebuilt from rows of new items only (linear size), deletion and eviction in the middle
of a chain, store: false, instructions, reasoning items, input_items cursors, a file of the old layout."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest

from tests.api.conftest import ServerHandle, ThreadedServer, free_port, stub_app
from tests.api.test_reasoning_scripted import HYBRID, THOUGHT, ThinkingTokenizer
from tests.api.test_tools_scripted import ScriptedEngine
from tests.responses.test_store import _OLD_SCHEMA, _old_put

TOOL = {"type": "function", "name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CALL = '{"name": "get_weather", "parameters": {"city": "Paris"}}'


class Server:
    def __init__(self, client: openai.OpenAI, engine: ScriptedEngine, db: Path) -> None:
        self.client, self.engine, self.db = client, engine, db

    def prompt(self, i: int = -1) -> str:
        return self.engine.tokenizer.decode(self.engine.seen_prompts[i])

    def stored_bytes(self) -> int:
        """The bytes of every stored row (JSON text), read from the file by a second connection."""
        db = sqlite3.connect(self.db)
        try:
            rows = db.execute("SELECT COALESCE(SUM(LENGTH(response) + COALESCE(LENGTH(base), 0)), 0) "
                              "FROM response").fetchone()[0]
            return rows + db.execute("SELECT COALESCE(SUM(LENGTH(item)), 0) FROM response_item").fetchone()[0]
        finally:
            db.close()

    def file_bytes(self) -> int:
        db = sqlite3.connect(self.db)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
        finally:
            db.close()


@contextmanager
def _serve(db: Path, **config) -> Iterator[Server]:
    engine = ScriptedEngine()
    engine.max_model_len = 1 << 20  # long conversations; the stub reads one byte per token
    engine.tokenizer = ThinkingTokenizer(HYBRID)
    port = free_port()
    with ThreadedServer(stub_app(engine, port=port, responses_db=str(db), max_request_bytes=8 << 20, **config), port):
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=60)
        yield Server(client, engine, db)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    with _serve(tmp_path_factory.mktemp("store") / "responses.sqlite") as s:
        yield s


@pytest.fixture
def api(server: Server) -> Server:
    server.engine.script, server.engine.num_calls = [], 0
    server.engine.seen_prompts.clear()
    return server


def _turns(client: openai.OpenAI, texts: list[str], **kw) -> list:
    """One response per text, each continuing the one before."""
    out = []
    for text in texts:
        previous = {"previous_response_id": out[-1].id} if out else {}
        out.append(client.responses.create(model="demo", input=text, **previous, **kw))
    return out


def test_a_long_tool_conversation_takes_space_linear_in_its_length(api):
    """Each row held the whole conversation so far: N turns of a K-byte tool output took ~N^2*K bytes
    (30 x 8 KiB: 7.4 MB). Now each turn adds its own items only."""
    n, k = 12, 8192
    api.engine.script = [CALL]
    r = api.client.responses.create(model="demo", input="Weather in Paris?", tools=[TOOL])
    grown = []
    for i in range(1, n):
        before = api.stored_bytes()
        [call] = [o for o in r.output if o.type == "function_call"]
        output = f"<result {i}>".ljust(k, "x")
        r = api.client.responses.create(model="demo", previous_response_id=r.id, tools=[TOOL], input=[
            {"type": "function_call_output", "call_id": call.call_id, "output": output}])
        grown.append(api.stored_bytes() - before)
    assert all(k <= g < k + 4096 for g in grown), grown  # one tool output and one answer each, not the past
    assert api.stored_bytes() < n * (k + 4096) and api.file_bytes() < 2 * n * (k + 4096)
    prompt = api.prompt()  # and the whole conversation still reached the model
    assert [prompt.index(f"<result {i}>") for i in range(1, n)] == sorted(prompt.index(f"<result {i}>")
                                                                        for i in range(1, n))
    assert prompt.index("Weather in Paris?") < prompt.index("<result 1>")
    items = api.client.responses.input_items.list(r.id, order="asc", limit=100).data
    assert [i.type for i in items] == ["message"] + ["function_call", "function_call_output"] * (n - 1)


def test_deleting_a_response_in_the_middle_leaves_the_later_turns_whole(api):
    api.engine.script = ["A one.", "A two.", "A three.", "A four."]
    first, second, third = _turns(api.client, ["Q one", "Q two", "Q three"])
    deleted = api.client.responses.delete(second.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError):
        api.client.responses.retrieve(second.id)
    with pytest.raises(openai.BadRequestError, match="not found") as err:
        api.client.responses.create(model="demo", input="Q x", previous_response_id=second.id)
    assert err.value.body["code"] == "previous_response_not_found"
    # Later turns keep the conversation they were made from, as before the store kept rows of new items.
    listed = api.client.responses.input_items.list(third.id, order="asc").data
    assert [i.content[0].text for i in listed] == ["Q one", "A one.", "Q two", "A two.", "Q three"]
    fourth = api.client.responses.create(model="demo", input="Q four", previous_response_id=third.id)
    assert fourth.output_text == "A four."
    prompt = api.prompt()
    assert all(t in prompt for t in ("Q one", "A one.", "Q two", "A two.", "Q three", "A three.", "Q four"))
    assert api.client.responses.retrieve(first.id).output_text == "A one."
    with pytest.raises(openai.NotFoundError):
        api.client.responses.delete(second.id)


def test_store_false_is_neither_kept_nor_continued(api):
    api.engine.script = ["A one.", "A two.", "A three."]
    kept = api.client.responses.create(model="demo", input="Q one")
    fleeting = api.client.responses.create(model="demo", input="Q two", previous_response_id=kept.id, store=False)
    assert fleeting.store is False and fleeting.output_text == "A two." and "Q one" in api.prompt()
    with pytest.raises(openai.NotFoundError):
        api.client.responses.retrieve(fleeting.id)
    with pytest.raises(openai.BadRequestError):
        api.client.responses.create(model="demo", input="Q three", previous_response_id=fleeting.id)
    assert [i.content[0].text for i in api.client.responses.input_items.list(kept.id).data] == ["Q one"]


def test_instructions_are_not_carried_over(api):
    api.engine.script = ["A one.", "A two."]
    first = api.client.responses.create(model="demo", input="Q one", instructions="Be terse.")
    api.client.responses.create(model="demo", input="Q two", previous_response_id=first.id, instructions="Be loud.")
    prompt = api.prompt()
    assert "Be terse." not in prompt and prompt.startswith("<system>Be loud.\n<user>Q one")


def test_reasoning_items_are_part_of_the_chain(api):
    api.engine.script = [THOUGHT + "Hello!", "Again."]
    first = api.client.responses.create(model="demo", input="Hi")
    reasoning, message = first.output
    assert reasoning.type == "reasoning"
    second = api.client.responses.create(model="demo", input="And?", previous_response_id=first.id)
    listed = api.client.responses.input_items.list(second.id, order="asc").data
    assert [(i.type, i.id) for i in listed][1:3] == [("reasoning", reasoning.id), ("message", message.id)]
    assert listed[1].content[0].text == "The user says hi."
    # An item_reference to the stored reasoning item is that item again.
    api.client.responses.create(model="demo", input=[{"type": "item_reference", "id": message.id},
                                                     {"role": "user", "content": "Once more"}])
    assert api.prompt().startswith("<assistant>Hello!\n<user>Once more")


def test_input_items_pages_with_after_and_before(api):
    api.engine.script = ["A one.", "A two.", "A three."]
    third = _turns(api.client, ["Q one", "Q two", "Q three"])[-1]
    every = api.client.responses.input_items.list(third.id, order="asc").data
    assert [i.content[0].text for i in every] == ["Q one", "A one.", "Q two", "A two.", "Q three"]
    page = api.client.responses.input_items.list(third.id, order="asc", limit=2, after=every[1].id)
    assert [i.content[0].text for i in page.data] == ["Q two", "A two."] and page.has_more
    back = api.client.responses.input_items.list(third.id, order="asc", limit=2, extra_query={"before": every[3].id})
    assert [i.content[0].text for i in back.data] == ["A one.", "Q two"] and back.has_more
    newest = api.client.responses.input_items.list(third.id, limit=2, extra_query={"before": every[1].id})
    assert [i.content[0].text for i in newest.data] == ["A two.", "Q two"] and newest.has_more  # the page before
    with pytest.raises(openai.BadRequestError, match="before"):
        api.client.responses.input_items.list(third.id, extra_query={"before": "msg_nope"})
    for limit in ("5_0", " 3", "+3", "\u0663", "1.0"):  # ASCII digits only, not all that Python's int() reads
        with pytest.raises(openai.BadRequestError, match="limit"):
            api.client.responses.input_items.list(third.id, extra_query={"limit": limit})


def test_a_chain_outlives_the_eviction_of_its_beginning(tmp_path):
    with _serve(tmp_path / "r.sqlite", responses_max=2) as small:
        small.engine.script = ["A one.", "A two.", "A three.", "A four.", "A five."]
        turns = _turns(small.client, ["Q one", "Q two", "Q three", "Q four"])
        for gone in turns[:2]:
            with pytest.raises(openai.NotFoundError):
                small.client.responses.retrieve(gone.id)
        listed = small.client.responses.input_items.list(turns[-1].id, order="asc").data
        assert [i.content[0].text for i in listed] == ["Q one", "A one.", "Q two", "A two.", "Q three", "A three.",
                                                       "Q four"]
        small.client.responses.create(model="demo", input="Q five", previous_response_id=turns[-1].id)
        assert small.prompt().startswith("<user>Q one\n<assistant>A one.\n<user>Q two")


def test_a_store_file_of_the_previous_layout_is_read_and_continued(tmp_path):
    """A file that VeloLLM wrote before rows held only their own items: converted on open."""
    old = sqlite3.connect(tmp_path / "r.sqlite")
    old.executescript(_OLD_SCHEMA)
    said = {"id": "msg_old_a", "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": "Old answer.", "annotations": []}]}
    asked = {"id": "msg_old_q", "type": "message", "role": "user", "status": "completed",
             "content": [{"type": "input_text", "text": "Old question"}]}
    response = {"id": "resp_old", "object": "response", "created_at": 1700000000, "status": "completed",
                "model": "demo", "output": [said], "previous_response_id": None, "tools": [],
                "parallel_tool_calls": True, "tool_choice": "auto", "store": True}
    _old_put(old, response, [{"role": "user", "content": "Old question"},
                             {"role": "assistant", "content": "Old answer."}], [asked])
    old.commit()
    old.close()
    with _serve(tmp_path / "r.sqlite") as s:
        assert s.client.responses.retrieve("resp_old").output_text == "Old answer."
        s.engine.script = ["New answer."]
        new = s.client.responses.create(model="demo", input="New question", previous_response_id="resp_old")
        assert s.prompt() == "<user>Old question\n<assistant>Old answer.\n<user>New question\n<assistant>"
        listed = s.client.responses.input_items.list(new.id, order="asc").data
        assert [i.id for i in listed[:2]] == ["msg_old_q", "msg_old_a"]
        assert json.loads(s.client.responses.retrieve(new.id).model_dump_json())["previous_response_id"] == "resp_old"


def test_an_older_store_file_is_converted_at_start_up_not_on_the_first_request(tmp_path):
    """A file written before the size cap (no auto_vacuum) needs one VACUUM of the whole file to take
    incremental auto_vacuum: the server does it when it starts, before it listens, so the first request
    that reads the store finds it converted and waits for no VACUUM."""
    from velollm.responses import ResponseStore

    path = tmp_path / "r.sqlite"
    store = ResponseStore(path)
    for i in range(64):
        said = {"id": f"msg_{i}", "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": f"answer {i} " + "x" * 20_000, "annotations": []}]}
        store.put({"id": f"resp_{i}", "object": "response", "created_at": 1700000000 + i, "status": "completed",
                   "model": "demo", "output": [said], "previous_response_id": None, "tools": [],
                   "parallel_tool_calls": True, "tool_choice": "auto", "store": True})
    store.close()
    old = sqlite3.connect(path)  # back to the layout of a file written before the cap
    old.execute("PRAGMA auto_vacuum = 0")
    old.execute("VACUUM")
    assert old.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    old.close()
    with _serve(path) as s:
        db = sqlite3.connect(path)  # listening: converted already, no request made yet
        try:
            assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
        finally:
            db.close()
        assert s.client.responses.retrieve("resp_63").output_text.startswith("answer 63 ")
    with _serve(tmp_path / "new" / "r.sqlite") as s:  # no file: made on first use, as before
        assert not (tmp_path / "new" / "r.sqlite").exists()
        s.engine.script = ["Hi."]
        assert s.client.responses.retrieve(s.client.responses.create(model="demo", input="Hello").id).output_text \
            == "Hi."


def test_a_response_over_the_row_cap_is_not_stored_and_says_so(tmp_path):
    """--responses-max-row-size: a response whose row (input items, output items, the object) is over it is
    answered and not stored, `store: false` in what the client gets (whole, and every streamed event when the
    input alone is over); `store: true` sent with an input already over it is a 400 before generation."""
    with _serve(tmp_path / "r.sqlite", responses_max_row_bytes=8192) as small:
        client, engine = small.client, small.engine
        handle = ServerHandle("stub", str(client.base_url).rstrip("/").removesuffix("/v1"))
        engine.script = ["Short."]
        fits = client.responses.create(model="demo", input="Hi")
        assert fits.store is True and client.responses.retrieve(fits.id).output_text == "Short."
        big = "x" * 9000
        whole = client.responses.create(model="demo", input=big)  # store by default: answered, not stored
        events = list(client.responses.create(model="demo", input=big, stream=True))
        assert whole.output_text == "Short." and whole.store is False
        assert all(e.response.store is False for e in events if hasattr(e, "response"))
        calls = engine.num_calls
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(model="demo", input=big, store=True)
        assert refused.value.body["param"] == "store" and refused.value.body["code"] == "stored_row_too_large"
        assert "--responses-max-row-size" in refused.value.body["message"] and engine.num_calls == calls
        engine.script = ["y" * 9000]  # the input fits; the answer takes the row over
        long = client.responses.create(model="demo", input="Hi", store=True)
        streamed = list(client.responses.create(model="demo", input="Hi", stream=True))[-1].response
        assert long.store is False and streamed.store is False and long.output_text == "y" * 9000
        for unstored in (whole, events[-1].response, long, streamed):
            with pytest.raises(openai.NotFoundError):
                client.responses.retrieve(unstored.id)
        with pytest.raises(openai.BadRequestError, match="not found"):
            client.responses.create(model="demo", input="And?", previous_response_id=long.id)
        assert handle.metric("velollm_store_rows_skipped_total", store="responses", outcome="refused") == 1
        assert handle.metric("velollm_store_rows_skipped_total", store="responses", outcome="unstored") == 4
