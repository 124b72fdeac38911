"""POST /v1/responses/input_tokens through the official openai SDK (`client.responses.input_tokens.count`) on a
stub engine: each count equals the input_tokens that a create of the same request reports, and its errors are the
create's."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.api.conftest import ServerHandle, ThreadedServer, free_port, stub_app
from tests.api.stub_engine import StubEngine

TOOLS = [{"type": "function", "name": "get_weather", "description": "The weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


@pytest.fixture(scope="module")
def stub() -> Iterator[ServerHandle]:
    engine = StubEngine(max_model_len=1024)
    port = free_port()
    with ThreadedServer(stub_app(engine, port=port), port):
        yield ServerHandle("stub", f"http://127.0.0.1:{port}", engine=engine)


@pytest.fixture
def client(stub) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stub.url}/v1", api_key="x", max_retries=0, timeout=30)


def _counted_as_created(client: openai.OpenAI, **request) -> int:
    counted = client.responses.input_tokens.count(model="demo", **request)
    assert counted.object == "response.input_tokens"
    created = client.responses.create(model="demo", max_output_tokens=2, **request)
    assert counted.input_tokens == created.usage.input_tokens > 0
    return counted.input_tokens


def test_a_count_is_the_input_tokens_of_the_create(client):
    text = _counted_as_created(client, input="hello there")
    longer = _counted_as_created(client, input="hello there, and a few more words to count")
    assert longer > text
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [{"type": "input_text", "text": "how are you?"}]}]
    plain = _counted_as_created(client, input=messages)
    assert _counted_as_created(client, input=messages, instructions="Answer in French.") > plain
    assert _counted_as_created(client, input="weather in Paris?", tools=TOOLS) > \
        _counted_as_created(client, input="weather in Paris?")


def test_a_count_continuing_a_response_renders_its_conversation(client):
    first = client.responses.create(model="demo", input="hi", max_output_tokens=4)
    alone = client.responses.input_tokens.count(model="demo", input="and then?").input_tokens
    continued = _counted_as_created(client, input="and then?", previous_response_id=first.id)
    assert continued > alone + first.usage.input_tokens - 1  # the first turn's input and answer are in the prompt


def test_errors_are_the_creates(client, stub):
    with pytest.raises(openai.NotFoundError):
        client.responses.input_tokens.count(model="nope", input="hi")
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.input_tokens.count(model="demo", input=5)
    assert bad.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as unknown:
        client.responses.input_tokens.count(model="demo", input="hi", previous_response_id="resp_nope")
    assert unknown.value.body["code"] == "previous_response_not_found"
    with pytest.raises(openai.BadRequestError) as conversation:
        client.responses.input_tokens.count(model="demo", input="hi", conversation="conv_1")
    assert conversation.value.body["param"] == "conversation"
    long = "word " * 2000
    with pytest.raises(openai.BadRequestError) as overflow:  # over the context: the create's 400
        client.responses.input_tokens.count(model="demo", input=long)
    assert overflow.value.body["code"] == "context_length_exceeded"
    turns = [{"role": ("user", "assistant")[i % 2], "content": f"turn {i} " + "word " * 60} for i in range(31)]
    cut = client.responses.input_tokens.count(model="demo", input=turns, truncation="auto").input_tokens
    assert 0 < cut <= 1024  # truncation auto: the first items dropped, as the create drops them
    assert cut == client.responses.create(model="demo", input=turns, truncation="auto").usage.input_tokens


def _overflow_metrics(url: str) -> list[str]:
    return sorted(line for line in httpx.get(f"{url}/metrics").text.splitlines()
                  if line.startswith("velollm_context_") and not line.startswith("#"))


@pytest.mark.parametrize("mode", ["compress", "truncate"])
def test_a_count_over_the_context_moves_no_metric_and_leaves_its_summary_to_the_create(client, stub, mode):
    """A count of a conversation over the context is what the create sends after its overflow handling (the
    summary in it), without counting an overflow; the summary it made is the create's, not made again."""
    turns = [{"role": ("user", "assistant")[i % 2], "content": f"{mode} turn {i} " + "word " * 60} for i in range(31)]
    extra = {"context_overflow": mode}
    before, generations = _overflow_metrics(stub.url), len(stub.engine.seen_prompts)
    counted = client.responses.input_tokens.count(model="demo", input=turns, extra_body=extra).input_tokens
    assert 0 < counted <= 1024
    assert _overflow_metrics(stub.url) == before  # a count is not an overflow
    summaries = len(stub.engine.seen_prompts) - generations
    assert summaries == (mode == "compress")
    created = client.responses.create(model="demo", input=turns, max_output_tokens=2, extra_body=extra)
    assert created.usage.input_tokens == counted
    assert len(stub.engine.seen_prompts) == generations + summaries + 1  # the answer alone: the summary was cached
    assert _overflow_metrics(stub.url) != before  # the create's overflow is counted


def test_the_id_routes_still_answer_beside_it(client, stub):
    answer = httpx.get(f"{stub.url}/v1/responses/input_tokens")  # an id, and no response has it
    assert answer.status_code == 404 and "input_tokens" in answer.json()["error"]["message"]
    made = client.responses.create(model="demo", input="hi", max_output_tokens=2)
    assert client.responses.retrieve(made.id).id == made.id
    assert httpx.put(f"{stub.url}/v1/responses/input_tokens").status_code == 405


def test_the_real_engine_counts_as_it_creates(live_server):
    """`velollm serve` on the demo model: its own tokenizer and chat template."""
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="x", max_retries=0, timeout=60)
    first = client.responses.create(model="demo", input="hi", instructions="Be brief.", max_output_tokens=3)
    assert client.responses.input_tokens.count(model="demo", input="hi", instructions="Be brief.").input_tokens == \
        first.usage.input_tokens
    _counted_as_created(client, input="weather?", tools=TOOLS[:1], previous_response_id=first.id)
