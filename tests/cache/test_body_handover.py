"""The response cache hands the body it parsed to the endpoint (velollm.wire.json_body.hand_over):
with --cache a request body is parsed and checked once, not twice. A stub engine behind real uvicorn."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.api.conftest import ThreadedServer, free_port, stub_app
from velollm.cache.config import ResponseCacheConfig


@pytest.fixture
def parses(monkeypatch):
    """Counts the JSON reads of request bodies by the cache middleware and by the endpoints."""
    import velollm.api.handler as handler
    import velollm.cache.middleware as middleware

    counts = {"middleware": 0, "endpoint": 0}

    def counting(where, parse):
        async def parse_json(*args, **kw):
            counts[where] += 1
            return await parse(*args, **kw)
        return parse_json

    monkeypatch.setattr(middleware, "parse_json_off_loop", counting("middleware", middleware.parse_json_off_loop))
    monkeypatch.setattr(handler, "parse_json_off_loop", counting("endpoint", handler.parse_json_off_loop))
    return counts


def _serve(tmp_path, cache: bool):
    port = free_port()
    config = {"cache": ResponseCacheConfig(directory=tmp_path)} if cache else {}
    return ThreadedServer(stub_app(port=port, **config), port), f"http://127.0.0.1:{port}"


def test_cached_endpoints_parse_the_body_once(tmp_path, parses):
    server, url = _serve(tmp_path, cache=True)
    with server:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="demo", messages=[{"role": "user", "content": "héllo"}], max_tokens=4, temperature=0,
            extra_body={"cache": {"ttl": 3600}})  # the middleware takes `cache` out: the endpoint gets the rest
        assert raw.headers["x-velollm-cache"] == "miss" and raw.parse().choices[0].message.content
        r = httpx.post(f"{url}/api/generate", json={"model": "demo", "prompt": "hi", "stream": False,
                                                    "options": {"num_predict": 3}}, timeout=30)
        assert r.status_code == 200 and r.json()["done"] is True
        assert parses == {"middleware": 2, "endpoint": 0}
        # A body the cache cannot read is handed over as bytes: the endpoint parses it for its own 400.
        r = httpx.post(f"{url}/v1/chat/completions", content=b'{"model": "demo", "temperature": NaN}',
                       headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == "temperature"
        assert parses == {"middleware": 3, "endpoint": 1}


def test_without_the_cache_the_endpoint_parses(tmp_path, parses):
    server, url = _serve(tmp_path, cache=False)
    with server:
        r = httpx.post(f"{url}/v1/chat/completions", json={"model": "demo", "max_tokens": 2,
                                                           "messages": [{"role": "user", "content": "hi"}]},
                       timeout=30)
        assert r.status_code == 200
    assert parses == {"middleware": 0, "endpoint": 1}
