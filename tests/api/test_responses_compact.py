"""POST /v1/responses/compact through the official openai SDK (`client.responses.compact`) on a stub engine: the
answer parses as the SDK's CompactedResponse, its compaction item reads back into the prompt of a later create
(as the summary the model made), and what this server did not make is a 400 naming the item."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.responses import ResponseCompactionItem

from tests.api.conftest import ServerHandle, ThreadedServer, free_port, stub_app
from tests.api.stub_engine import StubEngine
from velollm.context.summary import INSTRUCTION, PREFIX
from velollm.errors import InvalidRequest
from velollm.responses.compaction import seal, unseal

TURNS = [{"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": "Hello Ada."},
         {"role": "user", "content": "I live in Paris."}, {"role": "assistant", "content": "A fine city."},
         {"role": "user", "content": "I like chess."}, {"role": "assistant", "content": "Good game."}]


@pytest.fixture(scope="module")
def stub() -> Iterator[ServerHandle]:
    engine = StubEngine(max_model_len=1024)
    port = free_port()
    with ThreadedServer(stub_app(engine, port=port), port):
        yield ServerHandle("stub", f"http://127.0.0.1:{port}", engine=engine)


@pytest.fixture
def client(stub) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stub.url}/v1", api_key="x", max_retries=0, timeout=30)


def _prompt(stub, index: int = -1) -> str:
    return stub.engine.tokenizer.decode(stub.engine.seen_prompts[index])


def _summary(item: ResponseCompactionItem) -> str:
    return unseal(item.encrypted_content, "test")


def test_compact_answers_the_user_messages_then_one_compaction_item(client, stub):
    seen = len(stub.engine.seen_prompts)
    compacted = client.responses.compact(model="demo", input=TURNS, instructions="Be brief.")
    assert compacted.object == "response.compaction" and compacted.id.startswith("resp_")
    *users, last = compacted.output
    assert [u.role for u in users] == ["user"] * 3
    assert [u.content[0].text for u in users] == ["My name is Ada.", "I live in Paris.", "I like chess."]
    assert isinstance(last, ResponseCompactionItem) and last.type == "compaction"
    assert len(stub.engine.seen_prompts) == seen + 1  # the summary, made by the model itself
    asked = _prompt(stub)
    assert INSTRUCTION in asked and "Good game." in asked and "I like chess." in asked
    summary = _summary(last)
    assert compacted.usage.output_tokens == len(stub.engine.tokenizer.encode(summary, add_special_tokens=False))
    assert compacted.usage.input_tokens > 0
    assert compacted.usage.total_tokens == compacted.usage.input_tokens + compacted.usage.output_tokens


def test_a_create_with_the_compacted_window_reads_the_summary(client, stub):
    compacted = client.responses.compact(model="demo", input=TURNS)
    window = [item.model_dump(exclude_none=True, warnings=False) for item in compacted.output]
    summary = _summary(compacted.output[-1])
    created = client.responses.create(model="demo", input=[*window, {"role": "user", "content": "What is my name?"}],
                                      max_output_tokens=2)
    prompt = _prompt(stub)
    assert f"<system>{PREFIX}{summary}\n<user>What is my name?" in prompt
    assert "Good game." not in prompt  # the answers are in the summary only
    assert created.usage.input_tokens == len(stub.engine.seen_prompts[-1])
    # the same conversation compacted again reuses its summary (made once, cached)
    seen = len(stub.engine.seen_prompts)
    again = client.responses.compact(model="demo", input=TURNS)
    assert len(stub.engine.seen_prompts) == seen and _summary(again.output[-1]) == summary


def test_compact_continues_a_stored_chain(client, stub):
    first = client.responses.create(model="demo", input="My name is Bob.", max_output_tokens=3)
    compacted = client.responses.compact(model="demo", input="And I am 40.", previous_response_id=first.id)
    assert [u.content[0].text for u in compacted.output[:-1]] == ["My name is Bob.", "And I am 40."]
    assert "My name is Bob." in _prompt(stub) and "And I am 40." in _prompt(stub)


def test_unreadable_content_is_a_400_naming_the_item(client):
    for content in ("garbage", "velollm-compaction:v1.%%%", "velollm-compaction:v1." + base64.urlsafe_b64encode(
            b'{"other": 1}').decode()):
        with pytest.raises(openai.BadRequestError) as bad:
            client.responses.create(model="demo", max_output_tokens=2, input=[
                {"role": "user", "content": "hi"}, {"type": "compaction", "encrypted_content": content},
                {"role": "user", "content": "and?"}])
        assert bad.value.body["param"] == "input[1].encrypted_content"
        assert bad.value.body["type"] == "invalid_request_error"


def test_errors_in_openai_format(client, stub):
    with pytest.raises(openai.NotFoundError):
        client.responses.compact(model="nope", input=TURNS)
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.compact(model="demo", input=5)
    assert bad.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as empty:
        client.responses.compact(model="demo", input=[])
    assert empty.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as unknown:
        client.responses.compact(model="demo", input="hi", previous_response_id="resp_nope")
    assert unknown.value.body["code"] == "previous_response_not_found"


def test_the_route_is_no_longer_the_id_routes_405(client, stub):
    answer = httpx.post(f"{stub.url}/v1/responses/compact", json={"model": "demo", "input": "hi"})
    assert answer.status_code == 200 and answer.json()["object"] == "response.compaction"
    assert httpx.get(f"{stub.url}/v1/responses/compact").status_code == 404  # an id no response has
    made = client.responses.create(model="demo", input="hi", max_output_tokens=2)
    assert client.responses.retrieve(made.id).id == made.id


def test_the_content_is_versioned_and_self_contained():
    sealed = seal("Ada lives in Paris; café ♟")
    assert sealed.startswith("velollm-compaction:v1.") and "=" not in sealed
    assert unseal(sealed, "p") == "Ada lives in Paris; café ♟"  # no server state: it reads after a restart
    with pytest.raises(InvalidRequest) as bad:
        unseal(None, "input[0].encrypted_content")
    assert bad.value.param == "input[0].encrypted_content"


def test_the_real_engine_compacts_and_continues(live_server):
    """`velollm serve` on the demo model: its own tokenizer, chat template and summarizer run. Its answers are
    random, so the check is the prompt: the summary's tokens are in the continuation's input, the answers are not."""
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="x", max_retries=0, timeout=60)
    turns = [{"role": ("user", "assistant")[i % 2], "content": f"turn {i} " + "word " * 20} for i in range(5)]
    compacted = client.responses.compact(model="demo", input=turns)
    assert compacted.output[-1].type == "compaction" and len(compacted.output) == 4
    window = [item.model_dump(exclude_none=True, warnings=False) for item in compacted.output]
    nxt = {"role": "user", "content": "and then?"}
    users_only = client.responses.input_tokens.count(model="demo", input=[*window[:-1], nxt]).input_tokens
    created = client.responses.create(model="demo", input=[*window, nxt], max_output_tokens=2)
    assert created.usage.input_tokens == client.responses.input_tokens.count(
        model="demo", input=[*window, nxt]).input_tokens
    assert created.usage.input_tokens > users_only  # the summary is in the prompt, where the item stood
    note = {"role": "system", "content": PREFIX + _summary(compacted.output[-1])}
    assert created.usage.input_tokens == client.responses.input_tokens.count(
        model="demo", input=[*window[:-1], note, nxt]).input_tokens
