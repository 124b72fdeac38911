"""/api/ps and /api/pull through the router, with the official ollama client against `velollm serve --config`:
a native `demo` (the local engine), two Ollama stand-ins (tests/ollama_upstream.py), a second `velollm serve`
serving `demo`, one Ollama-speaking backend whose /api/ps fails, and an OpenAI-compatible one. And /api/pull
on a server without any upstream."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import ollama
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.ollama_upstream import ollama_app
from tests.proxy.proxy_servers import ThreadServer
from tests.router.replicas import Replica, config_toml, replica_backends, start_replicas
from tests.serve_process import start_serve, stop_serve

ENGINE_ARGS = ("--max-model-len", "256", "--kv-cache-memory", "16MiB", "--max-num-seqs", "4")


def _flaky_ollama() -> Starlette:
    """Answers like Ollama except /api/ps, which fails (a backend mid-restart, say)."""
    async def version(request: Request) -> Response:
        return JSONResponse({"version": "0.12.3"})

    async def tags(request: Request) -> Response:
        return JSONResponse({"models": [{"name": "flaky:latest", "model": "flaky:latest", "size": 1}]})

    async def ps(request: Request) -> Response:
        return JSONResponse({"error": "runner crashed"}, status_code=500)

    return Starlette(routes=[Route("/api/version", version), Route("/api/tags", tags), Route("/api/ps", ps)])


def _openai_server(paths: list[str]) -> Starlette:
    async def models(request: Request) -> Response:
        paths.append(request.url.path)
        return JSONResponse({"object": "list", "data": [{"id": "gpt-x", "object": "model", "owned_by": "x"}]})

    async def other(request: Request) -> Response:
        paths.append(request.url.path)
        return JSONResponse({"error": {"message": "not found"}}, status_code=404)

    return Starlette(routes=[Route("/v1/models", models), Route("/{path:path}", other, methods=["GET", "POST"])])


@dataclass
class Setup:
    url: str
    log: object
    replica: Replica
    ollama_models: dict[str, list[str]]  # stand-in name -> its model list (a pull adds to it)
    openai_paths: list[str]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("ps_pull")
    replicas = start_replicas(tmp / "replicas", 1)
    models = {"ol-a": ["thinker:latest"], "ol-b": ["other:latest", "shared:latest"]}
    openai_paths: list[str] = []
    servers = {name: ThreadServer(ollama_app(m)).start() for name, m in models.items()}
    flaky = ThreadServer(_flaky_ollama()).start()
    oai = ThreadServer(_openai_server(openai_paths)).start()
    config = tmp / "velollm.toml"
    config.write_text(config_toml([
        {"name": "local", "kind": "native", "models": ["demo"]},
        {"name": "ol-b", "url": servers["ol-b"].url, "kind": "ollama"},
        *replica_backends(replicas, ("r0",)),
        {"name": "ol-a", "url": servers["ol-a"].url, "kind": "ollama", "models": ["thinker", "newer", "shared"]},
        {"name": "flaky", "url": flaky.url, "kind": "ollama"},
        {"name": "oai", "url": oai.url, "kind": "openai"},
    ], health_interval_s=0.5))
    proc, url, log, _ = start_serve(tmp, "--config", str(config), *ENGINE_ARGS)
    try:
        yield Setup(url, log, replicas[0], models, openai_paths)
    finally:
        stop_serve(proc)
        for server in (*servers.values(), flaky, oai):
            server.stop()
        for r in replicas:
            r.stop()


def test_ps_merges_the_local_engine_and_every_ollama_backend(setup):
    running = ollama.Client(host=setup.url, timeout=60).ps().models
    names = [m.model for m in running]
    assert names[0] == "demo" and names.count("demo") == 1, names  # the local engine's entry, listed once
    assert running[0].context_length == 256  # this process's (the replica runs it with 512)
    assert running[0].size > 0 and running[0].expires_at is not None
    assert names[1:] == ["other:latest", "thinker:latest"]  # backend order; flaky's failure left out
    thinker = running[2]
    assert thinker.size_vram == 5_000_000 and thinker.context_length == 4096
    assert "gpt-x" not in names and "/api/ps" not in setup.openai_paths  # OpenAI servers have no ps
    assert "backend flaky: GET /api/ps answered 500" in setup.log.read_text()


def _pulled(setup: Setup) -> dict[str, int]:
    return {name: len(models) for name, models in setup.ollama_models.items()}


def test_pull_goes_to_the_backends_that_serve_the_name(setup):
    client = ollama.Client(host=setup.url, timeout=60)
    before = _pulled(setup)
    parts = list(client.pull("thinker", stream=True))  # configured on ol-a only
    statuses = [p.status for p in parts]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success" and statuses.count("success") == 1
    layer = [p for p in parts if p.digest]
    assert layer and layer[-1].completed == layer[-1].total == 3_000_000
    assert _pulled(setup) == {"ol-a": before["ol-a"] + 1, "ol-b": before["ol-b"]}

    assert client.pull("newer").status == "success"  # configured on ol-a, not there yet: pulled there
    assert "newer:latest" in setup.ollama_models["ol-a"]

    r = httpx.post(setup.url + "/api/pull", json={"model": "shared"}, timeout=60)  # ol-b lists it, ol-a is configured
    lines = [line for line in r.text.splitlines() if line]
    assert r.status_code == 200 and r.headers["x-velollm-backend"] == "ol-b,ol-a"
    assert r.text.count('"pulling manifest"') == 2 and r.text.count('"success"') == 1 and '"success"' in lines[-1]
    assert setup.ollama_models["ol-a"].count("shared:latest") == 1 and setup.ollama_models["ol-b"].count("shared:latest") == 2


def test_pull_of_a_name_nobody_serves_goes_to_the_first_ollama_backend(setup):
    client = ollama.Client(host=setup.url, timeout=60)
    assert [p.status for p in client.pull("brandnew", stream=True)][-1] == "success"
    assert "brandnew:latest" in setup.ollama_models["ol-b"] and "brandnew:latest" not in setup.ollama_models["ol-a"]
    answer = client.chat(model="brandnew", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert "".join(p.message.content for p in answer) == "Hello there!"  # routable at once
    with pytest.raises(ollama.ResponseError) as err:  # the backend's error line, relayed
        list(client.pull("missing-model", stream=True))
    assert "pull model manifest: file does not exist" in str(err.value)
    with pytest.raises(ollama.ResponseError) as err:
        client.pull("missing-model")
    assert err.value.status_code == 500 and "file does not exist" in str(err.value)


def test_pull_of_a_balanced_model_goes_to_its_remote_replica(setup):
    before = _pulled(setup)
    r = httpx.post(setup.url + "/api/pull", json={"model": "demo", "stream": False}, timeout=60)
    assert r.status_code == 200 and r.json() == {"status": "success"} and r.headers["x-velollm-backend"] == "r0"
    assert _pulled(setup) == before  # the replica has it: nothing was downloaded anywhere


def test_pull_without_an_upstream(tmp_path):
    proc, url, _log, _ = start_serve(tmp_path, "--no-upstream", *ENGINE_ARGS)
    try:
        client = ollama.Client(host=url, timeout=60)
        parts = list(client.pull("demo", stream=True))  # served here: present, no network
        assert [p.status for p in parts] == ["pulling manifest", "verifying sha256 digest", "writing manifest",
                                             "success"]
        assert client.pull("demo").status == "success"
        with pytest.raises(ollama.ResponseError) as err:  # what Ollama answers when it cannot pull
            list(client.pull("llama3.2", stream=True))
        assert "VeloLLM does not download models" in str(err.value)
        with pytest.raises(ollama.ResponseError) as err:
            client.pull("llama3.2")
        assert err.value.status_code == 500 and "--upstream" in str(err.value)
    finally:
        stop_serve(proc)
