"""Responses stored by a replica (kind velollm: its own Responses API, passed through) are found through the
router: retrieve, input_items, delete and a create continuing one go to the replica that stored it, whatever the
policy (round-robin here would send every other request to the replica that has not got it); that replica
ejected is a 502 that names it."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.proxy.proxy_servers import ThreadServer, velollm_server
from tests.proxy.responses_chain import MESSAGE_ROLES, continue_twice, message_roles
from tests.router.replicas import BUSY_HEALTH_TIMEOUT_S, config_toml, replica_backends, router_app


def _replica() -> ThreadServer:
    return velollm_server()


@pytest.fixture
def replicas():
    started = [_replica(), _replica()]
    yield started
    for r in started:
        r.stop()


def test_a_response_is_found_on_the_replica_that_stored_it(replicas, tmp_path):
    # active checks: the dead holder stays ejected (without them it would be tried again after readmit_after_s)
    toml = config_toml(replica_backends(replicas), policy="round-robin", health_interval_s=0.2,
                       health_timeout_s=BUSY_HEALTH_TIMEOUT_S)
    server = ThreadServer(router_app(toml, tmp_path)).start()
    try:
        front = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=30)
        first = front.responses.with_raw_response.create(model="demo", input="hi", max_output_tokens=4)
        holder, first = first.headers["x-velollm-backend"], first.parse()
        for _ in range(2):  # each lookup and continuation on the holder, though the policy alternates
            got = front.responses.with_raw_response.retrieve(first.id)
            assert got.headers["x-velollm-backend"] == holder and got.parse().output_text == first.output_text
        second, third = continue_twice(front, first)
        assert message_roles(front.responses.input_items.list(third.id, order="asc").data) == MESSAGE_ROLES
        other = front.responses.with_raw_response.create(model="demo", input="new", max_output_tokens=4)
        assert other.headers["x-velollm-backend"] != holder  # round-robin: the other replica, and found there too
        assert front.responses.retrieve(other.parse().id).id == other.parse().id
        front.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            front.responses.retrieve(first.id)

        replicas["ab".index(holder)].stop()  # the holder dies: unreachable, then ejected
        for _ in range(2):
            answer = httpx.get(f"{server.url}/v1/responses/{second.id}")
            assert answer.status_code == 502 and answer.json()["error"]["type"] == "server_error"
        assert f"stored by backend '{holder}'" in answer.json()["error"]["message"]
        with pytest.raises(openai.InternalServerError) as err:
            front.responses.create(model="demo", input="and", previous_response_id=third.id, max_output_tokens=4)
        assert err.value.status_code == 502 and f"stored by backend '{holder}'" in err.value.message
        assert httpx.get(f"{server.url}/v1/responses/resp_nope").status_code == 404
    finally:
        server.stop()


def test_a_renamed_replica_is_followed_and_a_removed_one_said(replicas, tmp_path):
    """Who stored which response outlives a restart of the router (relayed_responses.sqlite, as `velollm serve` keeps
    it). Restarted with the holder renamed (same url), its responses are found under the new name; restarted
    without it, a lookup or continuation is a 502 that says the backend is no longer configured. Both were this
    process's 404 for an unknown id, which tells a client to drop a conversation the replica still holds."""
    from velollm.proxy.relayed_responses import RelayedResponses

    def router(name: str, url: str) -> ThreadServer:
        toml = config_toml([{"name": name, "url": url, "kind": "velollm"}], health_interval_s=0)
        relayed = RelayedResponses(path=str(tmp_path / "relayed_responses.sqlite"))
        return ThreadServer(router_app(toml, tmp_path, relayed)).start()

    def client(server: ThreadServer) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=30)

    first = router("a", replicas[0].url)
    try:
        created = client(first).responses.create(model="demo", input="hi", max_output_tokens=4)
    finally:
        first.stop()
    renamed = router("gpu0", replicas[0].url + "/v1")  # the same server (an OpenAI base URL's /v1 is dropped)
    try:
        got = client(renamed).responses.with_raw_response.retrieve(created.id)
        assert got.headers["x-velollm-backend"] == "gpu0" and got.parse().output_text == created.output_text
        chained = client(renamed).responses.create(model="demo", input="again", previous_response_id=created.id,
                                                   max_output_tokens=4)
        assert chained.previous_response_id == created.id
    finally:
        renamed.stop()
    removed = router("b", replicas[1].url)
    try:
        for response_id, name in ((created.id, "a"), (chained.id, "gpu0")):
            for method, path in (("GET", ""), ("GET", "/input_items"), ("DELETE", "")):
                answer = httpx.request(method, f"{removed.url}/v1/responses/{response_id}{path}")
                assert answer.status_code == 502 and answer.json()["error"]["code"] == "backend_not_configured"
                assert f"stored by backend '{name}' ({replicas[0].url}), which this router's configuration no " \
                       "longer has" in answer.json()["error"]["message"]
        with pytest.raises(openai.InternalServerError) as err:
            client(removed).responses.create(model="demo", input="and", previous_response_id=chained.id,
                                             max_output_tokens=4)
        assert err.value.status_code == 502 and err.value.body["code"] == "backend_not_configured"
        assert httpx.get(f"{removed.url}/v1/responses/resp_nope").status_code == 404
        assert client(removed).responses.create(model="demo", input="new", max_output_tokens=4).output_text
    finally:
        removed.stop()


def test_a_background_response_is_followed_and_cancelled_on_its_replica(tmp_path):
    """A background create through the router runs on one replica; its GET (as it runs, and its events after a
    sequence number) and its cancel go to that replica, though round-robin would send every other one elsewhere."""
    from tests.api.stub_engine import StubEngine

    slow = [velollm_server(StubEngine(token_delay_s=0.005)) for _ in range(2)]  # a second an answer
    server = ThreadServer(router_app(config_toml(replica_backends(slow), policy="round-robin"), tmp_path)).start()
    try:
        front = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=30)
        created = front.responses.with_raw_response.create(model="demo", input="go on", background=True,
                                                           max_output_tokens=200, extra_body={"ignore_eos": True})
        holder, created = created.headers["x-velollm-backend"], created.parse()
        assert created.status == "queued"
        first = next(iter(front.responses.retrieve(created.id, stream=True, starting_after=3)))
        assert first.sequence_number == 4
        for _ in range(2):
            got = front.responses.with_raw_response.retrieve(created.id)
            assert got.headers["x-velollm-backend"] == holder and got.parse().status == "in_progress"
        assert front.responses.cancel(created.id).status == "cancelled"
        engine = slow["ab".index(holder)]
        held = openai.OpenAI(base_url=f"{engine.url}/v1", api_key="x", max_retries=0, timeout=30)
        assert held.responses.retrieve(created.id).status == "cancelled"
    finally:
        server.stop()
        for replica in slow:
            replica.stop()


def test_a_count_continuing_a_response_goes_to_the_replica_that_stored_it(replicas, tmp_path):
    """POST /v1/responses/input_tokens with previous_response_id: the holder renders that conversation (the other
    replica would answer its 400 previous_response_not_found), whatever the policy picks."""
    toml = config_toml(replica_backends(replicas), policy="round-robin", health_interval_s=0)
    server = ThreadServer(router_app(toml, tmp_path)).start()
    try:
        front = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=30)
        first = front.responses.with_raw_response.create(model="demo", input="hi", max_output_tokens=4)
        holder, first = first.headers["x-velollm-backend"], first.parse()
        for _ in range(2):
            counted = front.responses.input_tokens.with_raw_response.count(model="demo", input="and?",
                                                                         previous_response_id=first.id)
            assert counted.headers["x-velollm-backend"] == holder
        created = front.responses.create(model="demo", input="and?", previous_response_id=first.id, max_output_tokens=2)
        assert counted.parse().input_tokens == created.usage.input_tokens
    finally:
        server.stop()


def test_a_compaction_continuing_a_response_goes_to_the_replica_that_stored_it(replicas, tmp_path):
    """POST /v1/responses/compact with previous_response_id: the holder has the conversation to summarise (the
    other replica would answer its 400 previous_response_not_found), whatever the policy picks."""
    toml = config_toml(replica_backends(replicas), policy="round-robin", health_interval_s=0)
    server = ThreadServer(router_app(toml, tmp_path)).start()
    try:
        front = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=30)
        first = front.responses.with_raw_response.create(model="demo", input="hi", max_output_tokens=4)
        holder, first = first.headers["x-velollm-backend"], first.parse()
        for _ in range(2):
            compacted = front.responses.with_raw_response.compact(model="demo", input="and?",
                                                                  previous_response_id=first.id)
            assert compacted.headers["x-velollm-backend"] == holder
            assert [m.content[0].text for m in compacted.parse().output[:-1]] == ["hi", "and?"]
    finally:
        server.stop()


def test_a_chain_stored_by_the_router_goes_on_on_a_replica_with_its_own_api(replicas, tmp_path):
    """A response the router's own engine made and stored, continued on a model its replicas serve (kind velollm:
    their own Responses API): the chain is the router's, so the create runs on a replica's chat route with the
    conversation rebuilt here, and the router stores it (retrievable through it, unknown to the replicas)."""
    from tests.api.stub_engine import StubEngine
    from velollm.api.app import create_app
    from velollm.api.server_config import ServerConfig
    from velollm.router.config import load_config
    from velollm.router.router import Router

    path = tmp_path / "velollm.toml"
    path.write_text(config_toml(replica_backends(replicas), health_interval_s=0))
    app = create_app(ServerConfig(stats_interval_s=0), {"mine": StubEngine()}, upstream=Router(load_config(path)))
    server = ThreadServer(app).start()
    try:
        front = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=30)
        first = front.responses.create(model="mine", input="hi", max_output_tokens=4)
        second, third = continue_twice(front, first)
        for made in (second, third):
            assert made.model == "demo" and front.responses.retrieve(made.id).output_text == made.output_text
            for replica in replicas:
                assert httpx.get(f"{replica.url}/v1/responses/{made.id}").status_code == 404
        assert message_roles(front.responses.input_items.list(third.id, order="asc").data) == MESSAGE_ROLES
        counted = front.responses.input_tokens.count(model="demo", input="and", previous_response_id=third.id)
        fourth = front.responses.create(model="demo", input="and", previous_response_id=third.id, max_output_tokens=2)
        assert counted.input_tokens == fourth.usage.input_tokens
    finally:
        server.stop()
