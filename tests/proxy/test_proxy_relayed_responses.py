"""Responses stored by an upstream's own Responses API (here a VeloLLM taken as an OpenAI server, as a vLLM or
OpenAI upstream is): created through the proxy, they are looked up there too. Its GET /v1/responses/{id},
input_items and DELETE, and a create with previous_response_id, answered this process's 404 (its own store has
them not)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from proxy_servers import ThreadServer
from responses_chain import MESSAGE_ROLES, continue_twice, message_roles

from velollm.proxy.gateway import UpstreamGateway
from velollm.proxy.upstream import UpstreamConfig


def _velollm(*names: str, upstream: UpstreamGateway | None = None, port: int = 0) -> ThreadServer:
    from tests.api.stub_engine import StubEngine
    from velollm.api.app import create_app
    from velollm.api.server_config import ServerConfig

    app = create_app(ServerConfig(stats_interval_s=0), {n: StubEngine() for n in names}, upstream=upstream)
    return ThreadServer(app, port).start()


@pytest.fixture
def upstream() -> Iterator[ThreadServer]:
    """A VeloLLM serving demo and other: its Responses API stores what it answers."""
    server = _velollm("demo", "other")
    yield server
    server.stop()


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=30)


def test_responses_stored_upstream_are_looked_up_there(upstream, start_proxy):
    front = _client(start_proxy(upstream.url, kind="openai").url)
    first = front.responses.create(model="demo", input="hi", max_output_tokens=4)
    assert _client(upstream.url).responses.retrieve(first.id).id == first.id  # passed through: stored upstream
    assert front.responses.retrieve(first.id).output_text == first.output_text
    second, third = continue_twice(front, first)
    assert front.responses.retrieve(third.id).output_text == third.output_text  # learned from response.created
    items = front.responses.input_items.list(third.id, order="asc").data
    assert message_roles(items) == MESSAGE_ROLES
    page = front.responses.input_items.list(third.id, order="asc", limit=2, after=items[0].id)  # the query goes along
    assert [i.id for i in page.data] == [items[1].id, items[2].id] and page.has_more
    assert front.responses.delete(second.id) is None
    with pytest.raises(openai.NotFoundError):  # the upstream's 404 now, relayed
        front.responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError):
        _client(upstream.url).responses.retrieve(second.id)


def test_an_unknown_or_unstored_id_is_this_process_404(upstream, start_proxy):
    proxy = start_proxy(upstream.url, kind="openai")
    front = _client(proxy.url)
    unstored = front.responses.create(model="demo", input="hi", max_output_tokens=4, store=False)
    stored = front.responses.create(model="demo", input="hi", max_output_tokens=4)
    assert front.responses.retrieve(stored.id).id == stored.id
    for response_id in ("resp_nope", unstored.id):
        for method, path in (("GET", ""), ("GET", "/input_items"), ("DELETE", "")):
            answer = httpx.request(method, f"{proxy.url}/v1/responses/{response_id}{path}")
            assert answer.status_code == 404
            assert answer.json()["error"]["message"] == f"Response with id '{response_id}' not found."


def test_a_chain_stored_upstream_goes_on_there_for_a_model_run_here(upstream):
    """The front runs `other` itself; a create continuing a response the upstream stored goes to the upstream,
    which holds the conversation (here it had no previous response: a 400). A model the upstream lacks is a 404
    that says where the conversation is."""
    front_server = _velollm("other", "mine", upstream=UpstreamGateway(UpstreamConfig(url=upstream.url, kind="openai")))
    try:
        front = _client(front_server.url)
        first = front.responses.create(model="demo", input="hi", max_output_tokens=4)
        _, third = continue_twice(front, first, "other")
        items = _client(upstream.url).responses.input_items.list(third.id, order="asc").data
        assert message_roles(items) == MESSAGE_ROLES
        assert front.responses.retrieve(third.id).model == "other"
        with pytest.raises(openai.NotFoundError) as err:
            front.responses.create(model="mine", input="and", previous_response_id=third.id, max_output_tokens=4)
        assert err.value.body["param"] == "model" and err.value.body["code"] == "model_not_found"
        assert f"on upstream {upstream.url}, which stores the previous response '{third.id}'" in err.value.message
    finally:
        front_server.stop()


def test_a_chain_stored_here_goes_on_for_a_model_an_upstream_with_its_own_api_serves(upstream):
    """A response this process stored (its own engine's) continued on a model of an upstream with its own
    Responses API: the upstream has not got the chain, so the create runs on its chat route with the conversation
    rebuilt here, and is stored here like the chain before it (retrievable, input_items, continued on either model);
    the upstream stores nothing of it."""
    front_server = _velollm("mine", upstream=UpstreamGateway(UpstreamConfig(url=upstream.url, kind="openai")))
    try:
        front = _client(front_server.url)
        first = front.responses.create(model="mine", input="hi", max_output_tokens=4)
        second, third = continue_twice(front, first, "demo")
        for made in (second, third):
            assert made.model == "demo" and front.responses.retrieve(made.id).output_text == made.output_text
            with pytest.raises(openai.NotFoundError):
                _client(upstream.url).responses.retrieve(made.id)
        assert message_roles(front.responses.input_items.list(third.id, order="asc").data) == MESSAGE_ROLES
        counted = front.responses.input_tokens.count(model="demo", input="and", previous_response_id=third.id)
        fourth = front.responses.create(model="demo", input="and", previous_response_id=third.id, max_output_tokens=2)
        assert counted.input_tokens == fourth.usage.input_tokens > third.usage.input_tokens
        back = front.responses.create(model="mine", input="and", previous_response_id=fourth.id, max_output_tokens=2)
        assert back.previous_response_id == fourth.id and back.usage.input_tokens > fourth.usage.input_tokens
    finally:
        front_server.stop()


def test_a_restarted_proxy_still_finds_them(upstream, tmp_path):
    """The ids are kept beside the local store (as `velollm serve` puts it: relayed_responses.sqlite), so that the
    responses the upstream holds outlive a restart of the proxy, as the proxy's own stored responses do."""
    from velollm.proxy.relayed_responses import RelayedResponses

    def front() -> ThreadServer:
        relayed = RelayedResponses(path=str(tmp_path / "relayed_responses.sqlite"))
        return _velollm(upstream=UpstreamGateway(UpstreamConfig(url=upstream.url, kind="openai"), relayed=relayed))

    first = front()
    try:
        created = _client(first.url).responses.create(model="demo", input="hi", max_output_tokens=4)
    finally:
        first.stop()
    second = front()
    try:
        client = _client(second.url)
        assert client.responses.retrieve(created.id).output_text == created.output_text
        chained = client.responses.create(model="demo", input="again", previous_response_id=created.id,
                                          max_output_tokens=4)
        assert chained.previous_response_id == created.id
    finally:
        second.stop()


def test_an_upstream_upgraded_to_a_responses_api_is_used_after_a_while(start_proxy, monkeypatch):
    """An OpenAI-compatible upstream without /v1/responses (a 404 for a model it lists: llama.cpp's server) is
    taken at its word for gateway.NO_RESPONSES_API_S: the creates go to its chat route, stored here. The same
    address then serving one (upgraded) gets the creates after that time, stored there. The "no" was kept until the
    proxy restarted."""
    from proxy_servers import fake_openai_app

    from velollm.proxy import gateway

    monkeypatch.setattr(gateway, "NO_RESPONSES_API_S", 2.0)
    received: list[tuple[str, dict]] = []
    old = ThreadServer(fake_openai_app(["demo"], received)).start()
    front = _client(start_proxy(old.url, kind="openai").url)
    first = front.responses.create(model="demo", input="hi", max_output_tokens=4)  # tried, 404: the chat route
    second = front.responses.create(model="demo", input="hi", max_output_tokens=4)
    assert [path for path, _ in received] == ["/v1/chat/completions", "/v1/chat/completions"]
    old.stop()
    upgraded = _velollm("demo", port=old.port)
    try:
        third = front.responses.create(model="demo", input="hi", max_output_tokens=4)  # still "no": its chat
        time.sleep(2.0)
        fourth = front.responses.create(model="demo", input="hi", max_output_tokens=4)
        stored_upstream = _client(upgraded.url).responses
        for kept_here in (first, second, third):
            assert front.responses.retrieve(kept_here.id).id == kept_here.id
            with pytest.raises(openai.NotFoundError):
                stored_upstream.retrieve(kept_here.id)
        assert stored_upstream.retrieve(fourth.id).id == fourth.id
        assert front.responses.retrieve(fourth.id).id == fourth.id  # relayed there
    finally:
        upgraded.stop()
