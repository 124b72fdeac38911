"""Model management with an OpenAI-compatible upstream (llama.cpp's server, which has none): the local
Ollama store still takes delete, copy, create and blobs; a model only the upstream serves is a clear 501;
push is 501 (VeloLLM does not push); a name nobody serves is 404."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest
from gguf_fixture import write_tiny_llama_gguf

from tests.gguf.test_ollama_store import make_store
from tests.serve_process import start_serve, stop_serve

pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
from test_proxy_llama_cpp import MODEL, LlamaServer  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("admin-llama")
    gguf = write_tiny_llama_gguf(tmp / "tiny.gguf")
    store = tmp / "models"
    make_store(store, gguf, ("registry.ollama.ai", "library", "local", "latest"))
    server = LlamaServer(str(gguf))
    server.start()
    proc, url, _, _ = start_serve(tmp, "--upstream", server.url, "--max-model-len", "256",
                                  "--kv-cache-memory", "16MiB", env={"OLLAMA_MODELS": str(store)})
    try:
        yield url, store
    finally:
        stop_serve(proc)
        server.stop()


def test_the_local_store_still_takes_management(setup, tmp_path):
    url, store = setup
    client = ollama.Client(host=url, timeout=60)
    assert client.copy("local", "local-copy").status == "success"
    assert (store / "manifests/registry.ollama.ai/library/local-copy/latest").exists()
    digest = client.create_blob(write_tiny_llama_gguf(tmp_path / "b.gguf", seed=3))
    assert (store / "blobs" / digest.replace(":", "-")).exists()
    assert client.create(model="made", files={"b.gguf": digest}).status == "success"
    assert {"local-copy:latest", "made:latest", MODEL} <= {m.model for m in client.list().models}
    assert client.delete("local-copy").status == "success" and client.delete("made").status == "success"
    assert "local-copy:latest" not in {m.model for m in client.list().models}


def test_the_upstreams_models_are_not_managed_here(setup):
    url, _ = setup
    client = ollama.Client(host=url, timeout=60)
    with pytest.raises(ollama.ResponseError) as err:
        client.delete(MODEL)
    assert err.value.status_code == 501 and "OpenAI-compatible" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.copy(MODEL, "mine")
    assert err.value.status_code == 501
    with pytest.raises(ollama.ResponseError) as err:
        client.delete("nobody")
    assert (err.value.status_code, err.value.error) == (404, "model 'nobody' not found")
    with pytest.raises(ollama.ResponseError) as err:
        client.push("local")
    assert err.value.status_code == 501 and "does not push" in err.value.error
    missing = "sha256:" + hashlib.sha256(b"absent").hexdigest()
    assert httpx.head(f"{url}/api/blobs/{missing}").status_code == 404  # the local store's answer


def test_show_knows_only_the_upstreams_models(tmp_path):
    """/api/show through an OpenAI-compatible upstream (`--proxy-only`: every name goes to it) answered a model
    card for any name ("nobody": 200), where chat said 404; Ollama's show is a 404 for a model it does not
    have (Open WebUI reads it for a model's capabilities, `ollama show` for a typo)."""
    server = LlamaServer(str(write_tiny_llama_gguf(tmp_path / "tiny.gguf")))
    server.start()
    proc, url, _, _ = start_serve(tmp_path, "--proxy-only", "--upstream", server.url,
                                  env={"OLLAMA_MODELS": str(tmp_path / "empty")})
    try:
        client = ollama.Client(host=url, timeout=60)
        assert "completion" in client.show(MODEL).capabilities
        with pytest.raises(ollama.ResponseError) as err:
            client.show("nobody")
        assert (err.value.status_code, err.value.error) == (404, "model 'nobody' not found")
    finally:
        stop_serve(proc)
        server.stop()
