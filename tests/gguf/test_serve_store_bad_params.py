"""A store model whose params layer another tool wrote badly (a number no float64 holds, a wrong type, not a JSON
object): listed and shown like any other, a chat on it a 400 naming the model and the parameter, never a 500."""

from __future__ import annotations

from collections.abc import Iterator

import ollama
import openai
import pytest

from tests.gguf.params_store import serve_params_store
from tests.serve_process import stop_serve

BIG = "1" + "0" * 400  # 10**400: JSON allows it, no float64 holds it
PARAMS = {  # model -> its params layer as stored
    "good": b'{"temperature":0.5,"stop":["<|eot_id|>"]}',
    "big-ctx": f'{{"num_ctx":{BIG}}}'.encode(),
    "big-list": f'{{"stop":["a"],"num_predict":[1,{BIG}]}}'.encode(),
    "inf-temp": b'{"temperature":1e999}',
    "str-temp": b'{"temperature":"hot"}',
    "nested-ctx": b'{"num_ctx":{"a":1}}',
    "stop-str": b'{"stop":"x"}',
    "null-temp": b'{"temperature":null}',
    "not-json": b"{bad",
    "a-list": b"[1,2]",
    "bad-messages": b"{}",  # its messages layer is not JSON
}
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    more = {"bad-messages": {"messages": b"[{bad"}}  # its messages layer is not JSON
    proc, url = serve_params_store(tmp_path_factory.mktemp("bad-params"), PARAMS, more)
    yield url
    stop_serve(proc)


def test_the_listings_hold_every_model(url):
    names = {f"{name}:latest" for name in PARAMS}
    assert names <= {m.model for m in ollama.Client(host=url).list().models}
    assert names <= {m.id for m in openai.OpenAI(base_url=f"{url}/v1", api_key="x").models.list().data}


@pytest.mark.parametrize("name, shown", [
    ("big-ctx", f"num_ctx {BIG}"), ("big-list", f'stop "a" num_predict 1 num_predict {BIG}'),
    ("inf-temp", "temperature +Inf"),
    ("str-temp", 'temperature "hot"'), ("stop-str", 'stop "x"'), ("not-json", ""), ("a-list", ""),
    ("bad-messages", "")])
def test_show_prints_the_parameters_as_stored(url, name, shown):
    """It was a 500 for 10**400 (go_value's float() of it) and for a layer that is not a JSON object."""
    answer = ollama.Client(host=url).show(name)
    assert " ".join((answer.parameters or "").split()) == shown
    assert answer.details.format == "gguf"


@pytest.mark.parametrize("name, why", [
    ("big-ctx", "num_ctx is an integer no float64 holds"), ("big-list", "num_predict is an integer no float64 holds"),
    ("inf-temp", "temperature must be a finite number"), ("str-temp", "temperature must be a number, got str"),
    ("nested-ctx", "num_ctx must be an integer, got dict"), ("stop-str", "stop must be an array of strings"),
    ("not-json", "params layer"), ("a-list", "is not a JSON object but list"),
    ("bad-messages", "messages layer")])
def test_a_chat_on_the_model_is_a_400_naming_it_and_the_parameter(url, name, why):
    """As Ollama, which parses the model's options before the request's: the request setting the same option
    does not save it (big-ctx and big-list ran; stop-str ran with "x" as its stop string)."""
    client = ollama.Client(host=url)
    for call in (lambda: client.chat(name, USER, options={"num_predict": 2, "num_ctx": 64, "temperature": 0}),
                 lambda: client.generate(name, "hi", options={"num_predict": 2})):
        with pytest.raises(ollama.ResponseError) as caught:
            call()
        assert caught.value.status_code == 400 and f"model '{name}:latest'" in caught.value.error
        assert why in caught.value.error


def test_a_null_parameter_is_skipped_and_good_ones_run(url):
    """Ollama's Options.FromMap skips a null: the model runs with the default temperature."""
    client = ollama.Client(host=url)
    for name in ("null-temp", "good"):
        answer = client.chat(name, USER, options={"num_predict": 2})
        assert answer.done and answer.eval_count == 2
