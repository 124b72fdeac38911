"""Images and thinking reach upstream models through both APIs and to both upstream kinds.

The registry routes by model name before the body is interpreted, so a vision or thinking model
served by the upstream gets images and `think` / `reasoning_effort` (the upstream decides what it
supports), while a native model that takes text only still answers them with a clear 400. The fake
upstreams record what they received; the clients are the official `ollama` and `openai` ones.
"""

from __future__ import annotations

import httpx
import ollama
import openai
import pytest
from proxy_servers import FakeOllamaState, ThreadServer

from velollm.proxy.gateway import UpstreamGateway
from velollm.proxy.upstream import UpstreamConfig

# A 1x1 PNG: what a client sends as an image (base64 in Ollama's API, a data URL in OpenAI's).
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
DATA_URL = f"data:image/png;base64,{PNG_B64}"
OPENAI_MESSAGES = [{"role": "user", "content": [{"type": "text", "text": "what is this"},
                                                {"type": "image_url", "image_url": {"url": DATA_URL}}]}]
OLLAMA_MESSAGES = [{"role": "user", "content": "what is this", "images": [PNG_B64]}]
THOUGHT = "I see 1 image(s)"  # what both fake upstreams "think" when asked to, for one image


def _clients(server: ThreadServer) -> tuple[ollama.Client, openai.OpenAI]:
    return (ollama.Client(host=server.url, timeout=30),
            openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=30))


def _openai_answer(client: openai.OpenAI, model: str, stream: bool, reasoning_key: str) -> tuple[str, str]:
    """(reasoning, content) of a chat answer to OPENAI_MESSAGES with reasoning_effort "high".

    `reasoning_key`: Ollama's OpenAI layer says `reasoning`, vLLM and llama.cpp `reasoning_content`.
    """
    params = {"model": model, "messages": OPENAI_MESSAGES, "reasoning_effort": "high"}
    if not stream:
        message = client.chat.completions.create(**params).choices[0].message
        return message.model_extra[reasoning_key], message.content
    chunks = [c for c in client.chat.completions.create(stream=True, **params) if c.choices]
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get(reasoning_key) or "" for c in chunks)
    return reasoning, "".join(c.choices[0].delta.content or "" for c in chunks)


@pytest.fixture
def openai_models() -> list[str]:  # what conftest's openai_upstream lists here
    return ["vision-model"]


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_client_to_ollama_upstream(fake_ollama, ollama_state: FakeOllamaState, start_proxy, stream):
    native, _ = _clients(start_proxy(fake_ollama.url))
    parts = native.chat(model="llama3.2", messages=OLLAMA_MESSAGES, think=True, stream=stream)
    parts = list(parts) if stream else [parts]
    assert "".join(p.message.thinking or "" for p in parts) == THOUGHT
    assert "".join(p.message.content for p in parts) == "echo: what is this "
    path, body = ollama_state.requests[-1]
    assert path == "/api/chat" and body["think"] is True and body["messages"][0]["images"] == [PNG_B64]

    answer = native.generate(model="llama3.2", prompt="describe", images=[PNG_B64], think="high")
    assert answer.thinking == THOUGHT and answer.response == "echo: describe "
    path, body = ollama_state.requests[-1]
    assert path == "/api/generate" and body["think"] == "high" and body["images"] == [PNG_B64]


@pytest.mark.parametrize("stream", [False, True])
def test_openai_client_to_ollama_upstream(fake_ollama, ollama_state: FakeOllamaState, start_proxy, stream):
    _, client = _clients(start_proxy(fake_ollama.url))
    reasoning, content = _openai_answer(client, "llama3.2", stream, "reasoning")
    assert reasoning == THOUGHT and content == "echo: what is this "
    path, body = ollama_state.requests[-1]
    assert path == "/api/chat" and body["think"] == "high"
    assert body["messages"] == [{"role": "user", "content": "what is this", "images": [PNG_B64]}]


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_client_to_openai_upstream(openai_upstream, start_proxy, stream):
    upstream, received = openai_upstream
    native, _ = _clients(start_proxy(upstream.url))
    parts = native.chat(model="vision-model", messages=OLLAMA_MESSAGES, think=True, stream=stream)
    parts = list(parts) if stream else [parts]
    assert "".join(p.message.thinking or "" for p in parts) == THOUGHT
    assert "".join(p.message.content for p in parts) == "echo: what is this"
    path, body = received[-1]
    assert path == "/v1/chat/completions" and body["chat_template_kwargs"] == {"enable_thinking": True}
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "what is this"},
                                                             {"type": "image_url", "image_url": {"url": DATA_URL}}]}]

    answer = native.generate(model="vision-model", prompt="describe", images=[PNG_B64], think="low")
    assert answer.thinking == THOUGHT and answer.response == "echo: describe"
    path, body = received[-1]
    assert path == "/v1/chat/completions" and body["reasoning_effort"] == "low"
    assert body["messages"][-1]["content"][1] == {"type": "image_url", "image_url": {"url": DATA_URL}}


@pytest.mark.parametrize("stream", [False, True])
def test_openai_client_to_openai_upstream(openai_upstream, start_proxy, stream):
    upstream, received = openai_upstream
    _, client = _clients(start_proxy(upstream.url))
    reasoning, content = _openai_answer(client, "vision-model", stream, "reasoning_content")
    assert reasoning == THOUGHT and content == "echo: what is this"
    path, body = received[-1]
    assert path == "/v1/chat/completions" and body["messages"] == OPENAI_MESSAGES
    assert body["reasoning_effort"] == "high"


def test_native_text_model_still_refuses_images_beside_upstream_vision_model(fake_ollama, ollama_state):
    """One server, a native text-only model and an upstream one: the same request is a 400 for the
    first (the native rules) and reaches the second whole."""
    from tests.api.stub_engine import StubEngine
    from velollm.api.app import create_app
    from velollm.api.server_config import ServerConfig

    gateway = UpstreamGateway(UpstreamConfig(url=fake_ollama.url))
    server = ThreadServer(create_app(ServerConfig(stats_interval_s=0), {"demo": StubEngine()}, upstream=gateway)).start()
    try:
        native, client = _clients(server)
        with pytest.raises(ollama.ResponseError) as err:
            native.chat(model="demo", messages=OLLAMA_MESSAGES)
        assert err.value.status_code == 400 and "does not support images" in err.value.error
        with pytest.raises(ollama.ResponseError) as err:
            native.chat(model="demo", messages=[{"role": "user", "content": "x"}], think=True)
        assert err.value.status_code == 400 and "does not support thinking" in err.value.error
        with pytest.raises(openai.BadRequestError, match="text only"):
            client.chat.completions.create(model="demo", messages=OPENAI_MESSAGES)
        assert native.chat(model="llama3.2", messages=OLLAMA_MESSAGES).message.content == "echo: what is this "
        assert ollama_state.requests[-1][1]["messages"][0]["images"] == [PNG_B64]
        message = client.chat.completions.create(model="llama3.2", messages=OPENAI_MESSAGES).choices[0].message
        assert message.content == "echo: what is this "
        assert ollama_state.requests[-1][1]["messages"][0]["images"] == [PNG_B64]
    finally:
        server.stop()


@pytest.mark.parametrize("images", [["!!not base64"], ["iVBORw0KGgo="[:-2]], "abc", [5]])
def test_bad_images_for_an_openai_upstream_are_400s(openai_upstream, start_proxy, images):
    """Images that are no base64 strings, sent to an OpenAI-compatible upstream, were a 500 ('internal error:
    Incorrect padding') from the MIME sniffing of the conversion; Ollama's JSON binding refuses them: 400.
    Nothing reaches the upstream."""
    upstream, received = openai_upstream
    server = start_proxy(upstream.url)
    native, _ = _clients(server)
    before = len(received)
    for body in ({"model": "vision-model", "stream": False,
                  "messages": [{"role": "user", "content": "what is this", "images": images}]},
                 {"model": "vision-model", "stream": False, "prompt": "describe", "images": images}):
        path = "/api/chat" if "messages" in body else "/api/generate"
        r = httpx.post(f"{server.url}{path}", json=body, timeout=30)
        assert r.status_code == 400 and "images" in r.json()["error"], (path, r.text)
    assert len(received) == before  # (the ollama client checks images itself: raw bodies, as other clients send)
    assert native.chat(model="vision-model", messages=OLLAMA_MESSAGES).message.content == "echo: what is this"
