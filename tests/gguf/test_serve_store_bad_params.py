"""A store model whose params layer another tool wrote badly (a number no float64 holds, a wrong type, not a JSON
object): listed and shown like any other, a chat on it a 400 naming the model and the parameter, never a 500."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import ollama
import openai
import pytest

from tests.proxy.gguf_fixture import write_tiny_llama_gguf
from tests.serve_process import start_serve, stop_serve

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


def _blob(root: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs" / f"sha256-{digest}").write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("bad-params")
    root = base / "models"
    (root / "blobs").mkdir(parents=True)
    gguf = _blob(root, write_tiny_llama_gguf(base / "tiny.gguf", seed=0).read_bytes())
    config = _blob(root, b'{"model_format":"gguf","model_family":"llama","file_type":"Q8_0"}')
    for name, params in PARAMS.items():
        layers = [{"mediaType": "application/vnd.ollama.image.model", **gguf},
                  {"mediaType": "application/vnd.ollama.image.template", **_blob(root, b"{{ .Prompt }}")},
                  {"mediaType": "application/vnd.ollama.image.params", **_blob(root, params)}]
        if name == "bad-messages":
            layers.append({"mediaType": "application/vnd.ollama.image.messages", **_blob(root, b"[{bad")})
        path = root / "manifests/registry.ollama.ai/library" / name / "latest"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"schemaVersion": 2, "config": {"mediaType": "x", **config}, "layers": layers}))
    proc, url, _, _ = start_serve(base, "--no-upstream", "--max-loaded-models", "1", "--max-model-len", "128",
                                  "--kv-cache-memory", "16MiB", env={"OLLAMA_MODELS": str(root)})
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
