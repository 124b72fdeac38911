"""A store model's params layer holds on the OpenAI routes as on /api/chat (Ollama's /v1 merges the request over
the model's options): a field the request leaves out takes the model's value, one it sends wins, and a model
whose layer is invalid is OpenAI's 400."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.gguf.params_store import serve_params_store
from tests.serve_process import stop_serve

PARAMS = {  # model -> its params layer as stored
    "tuned": b'{"temperature":0,"num_predict":3,"seed":-1}',
    "hot": b'{"temperature":"hot"}',
}
USER = [{"role": "user", "content": "hi"}]
EXTRA = {"ignore_eos": True}  # the answer runs to its budget, whatever the random weights sample


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[openai.OpenAI]:
    proc, url = serve_params_store(tmp_path_factory.mktemp("v1-defaults"), PARAMS)
    yield openai.OpenAI(base_url=f"{url}/v1", api_key="x")
    stop_serve(proc)


def test_chat_takes_the_layers_budget_and_temperature(client):
    """num_predict 3 is the budget of a request without one; temperature 0 makes two unseeded answers alike."""
    answers = [client.chat.completions.create(model="tuned", messages=USER, extra_body=EXTRA) for _ in range(2)]
    assert [a.usage.completion_tokens for a in answers] == [3, 3]
    assert answers[0].choices[0].finish_reason == "length"
    assert answers[0].choices[0].message.content == answers[1].choices[0].message.content


def test_the_requests_own_values_win(client):
    """Its max_tokens over the layer's num_predict (the layer's temperature 0 still holds), its temperature over
    the layer's."""
    answers = [client.chat.completions.create(model="tuned", messages=USER, max_tokens=5, extra_body=EXTRA)
               for _ in range(2)]
    assert [a.usage.completion_tokens for a in answers] == [5, 5]
    assert answers[0].choices[0].message.content == answers[1].choices[0].message.content
    texts = {client.chat.completions.create(model="tuned", messages=USER, max_tokens=12, temperature=2.0, seed=s,
                                            extra_body=EXTRA).choices[0].message.content for s in range(4)}
    assert len(texts) > 1  # sampled at the request's temperature, not the layer's 0


def test_completions_and_responses_take_the_layer_too(client):
    texts = [client.completions.create(model="tuned", prompt="hi", extra_body=EXTRA) for _ in range(2)]
    assert [c.usage.completion_tokens for c in texts] == [3, 3]  # not the route's own default of 16
    assert texts[0].choices[0].text == texts[1].choices[0].text
    responses = [client.responses.create(model="tuned", input="hi", extra_body=EXTRA) for _ in range(2)]
    assert [r.usage.output_tokens for r in responses] == [3, 3]
    assert responses[0].output_text == responses[1].output_text


@pytest.mark.parametrize("route", ["chat", "completions", "responses"])
def test_an_invalid_layer_is_openais_400(client, route):
    calls = {"chat": lambda: client.chat.completions.create(model="hot", messages=USER),
             "completions": lambda: client.completions.create(model="hot", prompt="hi"),
             "responses": lambda: client.responses.create(model="hot", input="hi")}
    with pytest.raises(openai.BadRequestError) as info:
        calls[route]()
    assert "'hot:latest'" in info.value.message or "'hot'" in info.value.message
    assert "temperature" in info.value.message and info.value.param == "model"
