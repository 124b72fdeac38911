"""Ollama's model management through the router (velollm/router/model_admin.py), with the official `ollama`
client: two `velollm serve` backends, each on its own temporary Ollama store (a model `shared` in both),
and an OpenAI-compatible stand-in, which has no model management."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import ollama
import pytest
from gguf_fixture import write_tiny_llama_gguf
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.gguf.test_ollama_store import make_store
from tests.proxy.proxy_servers import ThreadServer
from tests.router.replicas import config_toml, router_app
from tests.serve_process import start_serve, stop_serve

ENGINE = ("--no-upstream", "--max-model-len", "256", "--kv-cache-memory", "16MiB")


def _openai_server() -> Starlette:
    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "gpt-x", "object": "model", "owned_by": "x"}]})

    async def other(request: Request) -> Response:
        return JSONResponse({"error": {"message": "not found"}}, status_code=404)

    return Starlette(routes=[Route("/v1/models", models),
                             Route("/{path:path}", other, methods=["GET", "POST", "DELETE", "HEAD"])])


@dataclass
class Setup:
    url: str
    stores: dict[str, Path]


def _manifest(store: Path, name: str) -> Path:
    return store / "manifests/registry.ollama.ai/library" / name / "latest"


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("router_admin")
    stores = {"vl-a": tmp / "a" / "models", "vl-b": tmp / "b" / "models"}
    for seed, (backend, names) in enumerate((("vl-a", ("only-a", "shared")), ("vl-b", ("only-b", "shared")))):
        for name in names:
            make_store(stores[backend], write_tiny_llama_gguf(tmp / f"{backend}-{name}.gguf", seed=seed),
                       ("registry.ollama.ai", "library", name, "latest"))
    procs = {b: start_serve(s.parent, *ENGINE, env={"OLLAMA_MODELS": str(s)}) for b, s in stores.items()}
    oai = ThreadServer(_openai_server()).start()
    toml = config_toml([{"name": "oai", "url": oai.url, "kind": "openai"},
                        *({"name": b, "url": p[1], "kind": "velollm"} for b, p in procs.items())])
    router = ThreadServer(router_app(toml, tmp)).start()
    try:
        yield Setup(router.url, stores)
    finally:
        router.stop()
        oai.stop()
        for proc, *_ in procs.values():
            stop_serve(proc)


def _tags(url: str) -> list[str]:
    return [m.model for m in ollama.Client(host=url, timeout=60).list().models]


def test_delete_goes_to_every_backend_that_has_the_model(setup):
    client = ollama.Client(host=setup.url, timeout=60)
    assert "shared:latest" in _tags(setup.url)
    r = httpx.request("DELETE", f"{setup.url}/api/delete", json={"model": "shared"}, timeout=60)
    assert (r.status_code, r.content, r.headers["x-velollm-backend"]) == (200, b"", "vl-a,vl-b")
    assert not _manifest(setup.stores["vl-a"], "shared").exists()
    assert not _manifest(setup.stores["vl-b"], "shared").exists()
    assert "shared:latest" not in _tags(setup.url)
    with pytest.raises(ollama.ResponseError) as err:
        client.delete("shared")
    assert (err.value.status_code, err.value.error) == (404, "model 'shared' not found")
    with pytest.raises(ollama.ResponseError) as err:  # served by the OpenAI-compatible backend only
        client.delete("gpt-x")
    assert err.value.status_code == 501 and "OpenAI-compatible" in err.value.error


def test_copy_goes_to_the_backend_of_the_source(setup):
    client = ollama.Client(host=setup.url, timeout=60)
    assert client.copy("only-b", "b-copy").status == "success"
    assert _manifest(setup.stores["vl-b"], "b-copy").exists() and not _manifest(setup.stores["vl-a"], "b-copy").exists()
    assert "b-copy:latest" in _tags(setup.url)
    answer = client.generate(model="b-copy", prompt="hello", raw=True, options={"num_predict": 2})
    assert answer.eval_count == 2  # routed to vl-b at once
    with pytest.raises(ollama.ResponseError) as err:
        client.copy("nobody", "x")
    assert err.value.status_code == 404


def test_blobs_go_to_the_first_ollama_backend(setup, tmp_path):
    client = ollama.Client(host=setup.url, timeout=60)
    data = os.urandom(1 << 20)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    digest = client.create_blob(path)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    name = digest.replace(":", "-")
    assert (setup.stores["vl-a"] / "blobs" / name).exists() and not (setup.stores["vl-b"] / "blobs" / name).exists()
    r = httpx.head(f"{setup.url}/api/blobs/{digest}")
    assert r.status_code == 200 and r.headers["x-velollm-backend"] == "vl-a"
    with pytest.raises(ollama.ResponseError) as err:  # vl-a has no Ollama upstream: its answer, relayed
        client.push("only-a")
    assert err.value.status_code == 501 and "does not push" in err.value.error


def test_create_goes_to_the_backend_of_its_blobs_or_of_its_base(setup, tmp_path):
    client = ollama.Client(host=setup.url, timeout=60)
    r = httpx.post(f"{setup.url}/api/create", json={"model": "b-system", "from": "only-b", "system": "Hi.",
                                                     "stream": False}, timeout=60)
    assert (r.status_code, r.json(), r.headers["x-velollm-backend"]) == (200, {"status": "success"}, "vl-b")
    assert _manifest(setup.stores["vl-b"], "b-system").exists()
    assert "b-system:latest" in _tags(setup.url)  # listed at once
    digest = client.create_blob(write_tiny_llama_gguf(tmp_path / "up.gguf", seed=5))
    parts = list(client.create(model="uploaded", files={"up.gguf": digest}, stream=True))
    assert parts[-1].status == "success"
    assert _manifest(setup.stores["vl-a"], "uploaded").exists()  # where the blob went
    assert client.generate(model="uploaded", prompt="hi", raw=True, options={"num_predict": 2}).eval_count == 2
