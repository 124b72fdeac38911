"""What the ollama client gets from an OpenAI-compatible upstream where Ollama's own answer differs from a plain
conversion of the upstream's: embeddings, load / unload requests."""

from __future__ import annotations

import math

import httpx
import ollama
import pytest


def test_api_embed_is_normalised_and_the_legacy_route_is_not(openai_upstream, start_proxy):
    """Ollama's /api/embed returns L2-normalised vectors (cut to `dimensions`, then normalised again); the
    upstream's ([3, 4, 0]) went out raw. The legacy /api/embeddings is the raw vector, as on Ollama."""
    upstream, received = openai_upstream
    client = ollama.Client(host=start_proxy(upstream.url).url, timeout=30)
    answer = client.embed(model="m", input=["a", "b"])
    assert [[round(x, 6) for x in v] for v in answer.embeddings] == [[0.6, 0.8, 0.0]] * 2
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0) for v in answer.embeddings)
    assert list(client.embed(model="m", input="a", dimensions=1).embeddings[0]) == [1.0]
    assert received[-1] == ("/v1/embeddings", {"model": "m", "input": "a", "dimensions": 1})
    assert list(client.embeddings(model="m", prompt="a").embedding) == [3.0, 4.0, 0.0]


@pytest.mark.parametrize("keep_alive, reason", [(0, "unload"), (0.0, "unload"), ("0", "unload"), ("0m", "unload"),
                                                ("0s", "unload"), ("0h0m", "unload"), (None, "load"), ("5m", "load"),
                                                (-1, "load")])
def test_a_load_request_with_keep_alive_zero_unloads(openai_upstream, start_proxy, keep_alive, reason):
    """An empty prompt / messages with keep_alive 0 in any spelling is Ollama's unload ("0m" answered "load"):
    `ollama stop` and scripts wait for done_reason "unload". Nothing reaches the upstream."""
    upstream, received = openai_upstream
    proxy = start_proxy(upstream.url)
    extra = {} if keep_alive is None else {"keep_alive": keep_alive}
    for path, body in (("/api/generate", {"prompt": ""}), ("/api/chat", {"messages": []})):
        r = httpx.post(f"{proxy.url}{path}", json={"model": "m", **body, **extra}, timeout=30)
        assert r.status_code == 200 and r.json()["done"] and r.json()["done_reason"] == reason, (path, r.text)
    assert not [p for p, _ in received if p != "/v1/models"]


def test_a_keep_alive_without_unit_is_ollamas_400(openai_upstream, start_proxy):
    upstream, received = openai_upstream
    client = ollama.Client(host=start_proxy(upstream.url).url, timeout=30)
    for call in (lambda: client.generate(model="m", prompt="", keep_alive="3600"),
                 lambda: client.chat(model="m", messages=[{"role": "user", "content": "hi"}], keep_alive="3600")):
        with pytest.raises(ollama.ResponseError) as err:
            call()
        assert err.value.status_code == 400 and "missing unit" in err.value.error
    assert not [p for p, _ in received if p != "/v1/models"]


@pytest.mark.parametrize(("option", "value", "kind"), [("temperature", "hot", "float32"), ("top_p", [1], "float32"),
                                                       ("repeat_penalty", True, "float32"), ("seed", "7", "integer"),
                                                       ("top_k", {"k": 3}, "integer")])
def test_an_option_of_the_wrong_type_is_ollamas_error_not_the_upstreams(openai_upstream, start_proxy, option, value,
                                                                        kind):
    """Ollama's Options.FromMap refuses a known option of another type (`option "x" must be of type float32`); the
    conversion sent it on, and llama-cpp-python's answer was a 500 with a pydantic dump and its file path. Nothing
    reaches the upstream; a number of either kind is taken (an integer option's truncated)."""
    upstream, received = openai_upstream
    client = ollama.Client(host=start_proxy(upstream.url).url, timeout=30)
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="m", messages=[{"role": "user", "content": "hi"}], options={option: value})
    assert err.value.status_code == 400 and err.value.error == f'option "{option}" must be of type {kind}'
    assert not [p for p, _ in received if p != "/v1/models"]
    client.generate(model="m", prompt="hi", options={option: 2.5 if kind == "integer" else 0.5})
    sent = received[-1][1]
    assert sent.get({"repeat_penalty": "repetition_penalty"}.get(option, option)) == (2 if kind == "integer" else 0.5)
