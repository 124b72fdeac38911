"""POST /v1/responses/input_tokens for a model served through an upstream (openai SDK): an upstream with its own
Responses API counts (its answer relayed, a continuation's count asked of the upstream holding the chain); one
with a chat route only renders its template where the proxy cannot see it, so the count is a clear 501."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from proxy_servers import ThreadServer, velollm_server


@pytest.fixture
def upstream() -> Iterator[ThreadServer]:
    server = velollm_server()
    yield server
    server.stop()


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=30)


def test_an_upstream_with_a_responses_api_counts(upstream, start_proxy):
    front = _client(start_proxy(upstream.url, kind="openai").url)
    counted = front.responses.input_tokens.count(model="demo", input="hello there", instructions="Be brief.")
    assert counted.input_tokens == _client(upstream.url).responses.input_tokens.count(
        model="demo", input="hello there", instructions="Be brief.").input_tokens
    first = front.responses.create(model="demo", input="hello there", instructions="Be brief.", max_output_tokens=4)
    assert counted.input_tokens == first.usage.input_tokens
    # the chain is stored upstream: its continuation is counted there, as its create runs there
    more = front.responses.input_tokens.count(model="demo", input="and?", previous_response_id=first.id)
    assert more.input_tokens == front.responses.create(model="demo", input="and?", previous_response_id=first.id,
                                                       max_output_tokens=2).usage.input_tokens
    with pytest.raises(openai.NotFoundError):  # the upstream's own answer for a model it lacks
        front.responses.input_tokens.count(model="nope", input="hi")


def test_an_upstream_with_a_chat_route_only_cannot_count(openai_upstream, start_proxy):
    server, _ = openai_upstream
    front = _client(start_proxy(server.url, kind="openai").url)
    assert front.responses.create(model="m", input="hi").output_text  # its creates run on its chat route
    with pytest.raises(openai.APIStatusError) as refused:
        front.responses.input_tokens.count(model="m", input="hi")
    assert refused.value.status_code == 501
    assert refused.value.body["code"] == "input_tokens_unavailable" and "'m'" in refused.value.body["message"]
    with pytest.raises(openai.BadRequestError):  # bad input is still the create's 400
        front.responses.input_tokens.count(model="m", input=5)


def test_a_velollm_upstream_found_by_the_probe_counts_the_chat_it_runs(upstream, start_proxy):
    """Its creates run on its chat route and are stored by the proxy: it counts what that chat holds, a chain
    stored by the proxy sent as the items that make it."""
    front = _client(start_proxy(upstream.url).url)
    counted = front.responses.input_tokens.count(model="demo", input="hello there", instructions="Be brief.")
    first = front.responses.create(model="demo", input="hello there", instructions="Be brief.", max_output_tokens=4)
    assert counted.input_tokens == first.usage.input_tokens
    with pytest.raises(openai.NotFoundError):
        _client(upstream.url).responses.retrieve(first.id)  # stored by the proxy, not upstream
    more = front.responses.input_tokens.count(model="demo", input="and?", previous_response_id=first.id)
    assert more.input_tokens == front.responses.create(model="demo", input="and?", previous_response_id=first.id,
                                                       max_output_tokens=2).usage.input_tokens


def test_an_ollama_upstream_cannot_count(fake_ollama, start_proxy):
    front = _client(start_proxy(fake_ollama.url).url)
    with pytest.raises(openai.APIStatusError) as refused:
        front.responses.input_tokens.count(model="llama3.2", input="hi")
    assert refused.value.status_code == 501 and refused.value.body["code"] == "input_tokens_unavailable"
