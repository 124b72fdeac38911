"""The router with llama.cpp's server (llama-cpp-python) as one backend beside a VeloLLM replica: one
endpoint, both models, both APIs, answers identical to the backend's own."""

from __future__ import annotations

from collections.abc import Iterator

import ollama
import openai
import pytest

from tests.proxy.gguf_fixture import write_tiny_llama_gguf
from tests.proxy.proxy_servers import ThreadServer
from tests.router.replicas import Replica, router_app, start_replicas

pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")

from tests.proxy.test_proxy_llama_cpp import MESSAGES, MODEL, LlamaServer  # noqa: E402


@pytest.fixture(scope="module")
def backends(tmp_path_factory) -> Iterator[tuple[LlamaServer, Replica]]:
    llama = LlamaServer(str(write_tiny_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")))
    llama.start()
    replica = start_replicas(tmp_path_factory.mktemp("replica"), 1)[0]
    yield llama, replica
    llama.stop()
    replica.stop()


def test_llama_cpp_and_velollm_behind_one_endpoint(backends, tmp_path):
    llama, replica = backends
    toml = f"""
[[backends]]
name = "llama"
url = "{llama.url}/v1"
kind = "llamacpp"
max_concurrency = 1
[[backends]]
name = "velollm"
url = "{replica.url}"
kind = "velollm"
"""
    server = ThreadServer(router_app(toml, tmp_path)).start()
    try:
        direct = openai.OpenAI(base_url=f"{llama.url}/v1", api_key="x", max_retries=0, timeout=60)
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=60)
        params = {"model": MODEL, "messages": MESSAGES, "temperature": 0, "max_tokens": 12}
        want = direct.chat.completions.create(**params)
        raw = client.chat.completions.with_raw_response.create(**params)
        assert raw.headers["x-velollm-backend"] == "llama"
        assert raw.parse().choices[0].message.content == want.choices[0].message.content
        native = ollama.Client(host=server.url, timeout=60)
        answer = native.chat(model=MODEL, messages=MESSAGES, options={"temperature": 0, "num_predict": 12})
        assert answer.message.content == want.choices[0].message.content and answer.done
        assert native.chat(model="demo", messages=MESSAGES, options={"num_predict": 3}).eval_count == 3
        assert sorted(m.id for m in client.models.list()) == ["demo", MODEL]
        assert sorted(m.model for m in native.list().models) == ["demo", MODEL]
    finally:
        server.stop()
