"""ResponseHolders: the backend a relayed response is looked up on (the live lookups through a router:
test_router_relayed_responses.py)."""

from __future__ import annotations

from tests.router.replicas import config_toml


def test_a_holder_is_the_backend_at_its_url_when_its_name_now_names_another_server(tmp_path):
    """Backends whose names were swapped in the configuration: the response stored by "a" at one server is at that
    server, now "b", not at the server "a" now names (which would answer a 404 for it); a name whose server moved
    (nothing at the stored url) is still followed by its name."""
    from velollm.proxy.relayed_responses import RelayedResponses
    from velollm.router.config import load_config
    from velollm.router.router import Router

    path = tmp_path / "velollm.toml"
    path.write_text(config_toml([{"name": "a", "url": "http://127.0.0.1:9002", "kind": "velollm"},
                                 {"name": "b", "url": "http://127.0.0.1:9001", "kind": "velollm"}]))
    relayed = RelayedResponses()
    relayed.remember("resp_swapped", "a", "http://127.0.0.1:9001")
    relayed.remember("resp_moved", "a", "http://127.0.0.1:9009")
    relayed.remember("resp_old", "a")  # learned before urls were kept
    router = Router(load_config(path), relayed)
    assert router.response_holder("resp_swapped") == "backend 'b' (http://127.0.0.1:9001)"
    assert router.response_holder("resp_moved") == "backend 'a' (http://127.0.0.1:9002)"
    assert router.response_holder("resp_old") == "backend 'a' (http://127.0.0.1:9002)"
    assert router.holders.find("resp_nope") is None


def test_an_unconfigured_holder_is_a_502_that_names_it_and_an_ejected_one_a_502_that_says_why(tmp_path):
    from velollm.proxy.relayed_responses import RelayedResponses
    from velollm.router.config import load_config
    from velollm.router.router import Router

    path = tmp_path / "velollm.toml"
    path.write_text(config_toml([{"name": "a", "url": "http://127.0.0.1:9001", "kind": "velollm"}]))
    relayed = RelayedResponses()
    relayed.remember("resp_gone", "old", "http://127.0.0.1:9009")
    holders = Router(load_config(path), relayed).holders
    gone = holders.find("resp_gone")
    assert gone == ("old", "http://127.0.0.1:9009")
    assert holders.describe("resp_gone") == "backend 'old' (http://127.0.0.1:9009, no longer configured)"
    answer = holders.gone("openai", gone, "resp_gone")
    assert answer.status_code == 502 and b'"backend_not_configured"' in answer.body
    assert b"stored by backend 'old' (http://127.0.0.1:9009)" in answer.body
    down = holders.down("ollama", holders.backends[0], "resp_x")
    assert down.status_code == 502 and b"stored by backend 'a' (http://127.0.0.1:9001)" in down.body
