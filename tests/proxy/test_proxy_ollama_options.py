"""Ollama options, sent by the ollama client through VeloLLM to an OpenAI-compatible upstream, as the upstream
gets them."""

from __future__ import annotations

import ollama
import pytest


@pytest.mark.parametrize("num_predict, max_tokens", [(0, None), (-1, None), (-2, None), (5, 5), (7.0, 7)])
def test_num_predict_becomes_max_tokens_only_when_it_limits(openai_upstream, start_proxy, num_predict, max_tokens):
    """num_predict 0 went up as max_tokens 0, which vLLM and VeloLLM refuse (400 'max_tokens must be at least 1')
    where Ollama and a native model generate without a limit; a float (5.0, what JSON numbers may be) was
    dropped."""
    upstream, received = openai_upstream
    client = ollama.Client(host=start_proxy(upstream.url).url, timeout=30)
    answer = client.chat(model="m", messages=[{"role": "user", "content": "hi"}], options={"num_predict": num_predict})
    assert answer.message.content == "echo: hi"
    assert received[-1][1].get("max_tokens") == max_tokens


@pytest.mark.parametrize("options, sent", [
    ({"temperature": -1, "top_p": 0, "min_p": 2}, {"temperature": 0.0, "top_p": 1e-9, "min_p": 1.0}),
    ({"temperature": 0.5, "top_p": 3, "min_p": -0.5}, {"temperature": 0.5, "top_p": 1.0, "min_p": 0.0}),
])
def test_sampling_options_out_of_range_go_up_as_ollamas_sampler_takes_them(openai_upstream, start_proxy, options,
                                                                            sent):
    """Ollama's sampler clamps them (a temperature of -1 is greedy); sent as given, an OpenAI-compatible upstream
    refused them with a 400."""
    upstream, received = openai_upstream
    client = ollama.Client(host=start_proxy(upstream.url).url, timeout=30)
    answer = client.chat(model="m", messages=[{"role": "user", "content": "hi"}], options=options)
    assert answer.message.content == "echo: hi"
    assert {key: received[-1][1].get(key) for key in sent} == sent


@pytest.mark.parametrize("field, value", [("format", "yaml"), ("format", 5), ("options", []), ("options", "x")])
def test_what_ollama_refuses_is_a_400_not_an_unconstrained_answer(openai_upstream, start_proxy, field, value):
    """`format: "yaml"` was dropped on the way to an OpenAI-compatible upstream (a free answer where Ollama says
    400 'invalid format'), and `options: []` taken as no options."""
    import httpx

    upstream, received = openai_upstream
    url = start_proxy(upstream.url).url
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False, field: value}
    r = httpx.post(f"{url}/api/chat", json=body, timeout=30)
    assert r.status_code == 400 and set(r.json()) == {"error"}, r.text
    assert not received
