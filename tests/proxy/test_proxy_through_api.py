"""Through the real API app (velollm/api, no native model) to a fake Ollama, with the official clients."""

from __future__ import annotations

import json

import ollama
import openai
import pytest
from proxy_servers import ThreadServer, fake_ollama_app

from tests.fast_enough import assert_fast

USER = [{"role": "user", "content": "hi there"}]


def test_ollama_and_openai_clients_through_velollm(fake_ollama, ollama_state, start_proxy):
    server = start_proxy(fake_ollama.url)
    native = ollama.Client(host=server.url, timeout=10)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=10)

    assert native.chat(model="llama3.2", messages=USER).message.content == "echo: hi there "
    parts = list(native.chat(model="llama3.2", messages=USER, stream=True))
    assert "".join(p.message.content for p in parts) == "echo: hi there " and parts[-1].done
    assert ollama_state.requests[-1][0] == "/api/chat"

    answer = client.chat.completions.create(model="llama3.2", messages=USER, max_tokens=2)
    assert (answer.choices[0].message.content, answer.choices[0].finish_reason) == ("echo: hi ", "length")
    chunks = list(client.chat.completions.create(model="llama3.2", messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hi there "
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    call = client.chat.completions.create(model="llama3.2", tools=tools, messages=[
        {"role": "user", "content": "weather?"}]).choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments) == {"city": "Tokyo"}

    assert "llama3.2:latest" in [m.id for m in client.models.list()]
    assert "llama3.2:latest" in [m.model for m in native.list().models]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=USER)
    with pytest.raises(ollama.ResponseError) as err:
        native.chat(model="nope", messages=USER)
    assert err.value.status_code == 404


def test_upstream_down_then_back_through_velollm(fake_ollama, ollama_state, start_proxy):
    server = start_proxy(fake_ollama.url)
    native = ollama.Client(host=server.url, timeout=10)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=10)
    assert native.generate(model="llama3.2", prompt="x").response == "echo: x "
    fake_ollama.stop()

    def refused() -> None:
        with pytest.raises(ollama.ResponseError) as err:
            native.generate(model="llama3.2", prompt="x")
        assert err.value.status_code == 502 and fake_ollama.url in err.value.error
        with pytest.raises(openai.InternalServerError) as oerr:
            client.completions.create(model="llama3.2", prompt="x")
        assert oerr.value.status_code == 502

    assert_fast(refused, 2)  # no retry or timeout waited out: one try of three within 2 s
    assert "llama3.2:latest" in [m.model for m in native.list().models]  # the last listing still answers
    restarted = ThreadServer(fake_ollama_app(ollama_state), port=fake_ollama.port).start()
    try:
        assert client.completions.create(model="llama3.2", prompt="y").choices[0].text == "echo: y "
    finally:
        restarted.stop()


@pytest.mark.parametrize("configured", [True, False])
def test_unknown_name_while_the_upstream_is_down_says_so(ollama_state, start_proxy, configured):
    """A server started while its upstream is down (or a name it did not list when it went down) cannot tell
    "no such model" from "no answer": the 404 says the listing failed, where it read as if the name were
    wrong. Not for the default Ollama address nobody configured: no Ollama running is the common case, and
    the 404 is then Ollama's own."""
    down = ThreadServer(fake_ollama_app(ollama_state)).start()
    down.stop()  # its port, free
    server = start_proxy(down.url, configured=configured)
    native = ollama.Client(host=server.url, timeout=10)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=10)
    with pytest.raises(ollama.ResponseError) as err:
        native.chat(model="llama3.2", messages=USER)
    with pytest.raises(openai.NotFoundError) as oerr:
        client.chat.completions.create(model="llama3.2", messages=USER)
    assert err.value.status_code == 404 and oerr.value.body["code"] == "model_not_found"
    if configured:
        assert err.value.error.startswith("model 'llama3.2' not found (upstream ") and down.url in err.value.error
        assert "did not list its models" in err.value.error and down.url in oerr.value.message
    else:
        assert err.value.error == "model 'llama3.2' not found"
    restarted = ThreadServer(fake_ollama_app(ollama_state), port=down.port).start()
    try:  # back: listed, answered, and an unknown name is a plain 404 again
        assert native.chat(model="llama3.2", messages=USER).message.content == "echo: hi there "
        with pytest.raises(ollama.ResponseError) as err:
            native.chat(model="nope", messages=USER)
        assert err.value.error == "model 'nope' not found"
    finally:
        restarted.stop()
