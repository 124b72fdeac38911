"""The registry's upstream hook: names not served natively go to `Upstream.forward`; listings merge."""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.testclient import TestClient

from tests.api.stub_engine import StubEngine


class FakeUpstream:
    def __init__(self) -> None:
        self.forwarded: list[tuple[str, dict]] = []

    async def find(self, name: str, reason: str = "") -> str | None:
        return "remote:7b" if name.lower() == "remote:7b" else None

    async def forward(self, request, body, model=None, tool_outcome=None, path=None):
        self.forwarded.append((path or request.url.path, body))
        return JSONResponse({"forwarded": model, "asked": body["model"]})

    async def aclose(self):
        pass

    async def ollama_tags(self):
        return [{"name": "remote:7b", "model": "remote:7b"}]

    async def openai_models(self):
        return [{"id": "remote:7b", "object": "model", "created": 0, "owned_by": "upstream"}]


def test_unknown_native_name_goes_upstream_and_listings_merge():
    from velollm.api.app import create_app
    from velollm.api.server_config import ServerConfig

    upstream = FakeUpstream()
    app = create_app(ServerConfig(stats_interval_s=0), {"demo": StubEngine()}, upstream=upstream)
    with TestClient(app, base_url="http://localhost") as c:
        r = c.post("/v1/chat/completions", json={"model": "remote:7b", "messages": [{"role": "user", "content": "x"}]})
        assert r.json() == {"forwarded": "remote:7b", "asked": "remote:7b"}
        r = c.post("/api/generate", json={"model": "REMOTE:7b", "prompt": "x"})
        assert r.json() == {"forwarded": "remote:7b", "asked": "REMOTE:7b"}  # the upstream's spelling is sent
        assert [p for p, _ in upstream.forwarded] == ["/v1/chat/completions", "/api/generate"]
        assert c.post("/api/generate", json={"model": "elsewhere", "prompt": "x"}).status_code == 404
        assert [m["name"] for m in c.get("/api/tags").json()["models"]] == ["demo", "remote:7b"]
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["demo", "remote:7b"]
        assert c.get("/v1/models/remote:7b").json()["owned_by"] == "upstream"
        # Ollama clients add ":latest"; the native model answers to both spellings
        assert c.post("/api/show", json={"model": "demo:latest"}).status_code == 200


def test_models_listing_names_a_model_once():
    from velollm.api.app import create_app
    from velollm.api.server_config import ServerConfig

    class Upstream(FakeUpstream):
        async def openai_models(self):
            return [{"id": "demo:latest", "object": "model", "created": 0, "owned_by": "upstream"},
                    *await super().openai_models()]

    app = create_app(ServerConfig(stats_interval_s=0), {"demo": StubEngine()}, upstream=Upstream())
    with TestClient(app, base_url="http://localhost") as c:
        data = c.get("/v1/models").json()["data"]
        assert [(m["id"], m["owned_by"]) for m in data] == [("demo", "velollm"), ("remote:7b", "upstream")]
        assert c.get("/v1/models/demo:latest").json()["id"] == "demo"
