"""`velollm serve --model tiny` serves an Ollama-store model through both APIs under that name."""

from __future__ import annotations

import ollama
import openai
import pytest

from tests.api.conftest import start_live, stop_live
from tests.cli.conftest import velollm

from .test_ollama_store import make_store


@pytest.fixture(scope="module")
def tiny_server(fixtures, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-store")
    make_store(root / "models", fixtures.model("llama", "Q8_0").path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OLLAMA_MODELS", str(root / "models"))
        proc, url, log = start_live(root, "--model", "tiny", "--max-model-len", "256")
    try:
        yield url
    finally:
        stop_live(proc)


def test_store_model_through_openai_and_ollama_clients(tiny_server):
    client = openai.OpenAI(base_url=f"{tiny_server}/v1", api_key="x")
    assert [m.id for m in client.models.list().data] == ["tiny"]
    completion = client.completions.create(model="tiny", prompt="Hello world", max_tokens=8, temperature=0)
    assert completion.model == "tiny" and completion.usage.completion_tokens == 8
    ollama_client = ollama.Client(host=tiny_server)
    generated = ollama_client.generate(model="tiny", prompt="Hello world", raw=True,
                                       options={"num_predict": 8, "temperature": 0})
    assert generated.model == "tiny" and generated.eval_count == 8
    assert generated.response == completion.choices[0].text
    shown = ollama_client.show("tiny")
    assert shown.details.format == "gguf" and shown.details.quantization_level == "Q8_0"
    assert shown.license == "MIT" and "\nLICENSE MIT\n" in shown.modelfile  # the store's license layer
    assert [m.model for m in ollama_client.list().models] == ["tiny"]


def test_show_command_prints_the_license(tiny_server, tmp_path):
    out = velollm(tiny_server, tmp_path, "show", "tiny", "--license")
    assert out.returncode == 0 and out.stdout.strip() == "MIT"
    table = velollm(tiny_server, tmp_path, "show", "tiny")
    assert "License" in table.stdout and "MIT" in table.stdout and "Q8_0" in table.stdout
