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
        proc, url, _log = start_live(root, "--model", "tiny", "--max-model-len", "256")
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


def test_show_verbose_lists_the_files_metadata_and_tensors(tiny_server, tmp_path, fixtures):
    """`ollama show -v`: /api/show with verbose gives the GGUF's own keys (arrays whole; general.name and the chat
    template left out, as Ollama's GetModelInfo leaves them) and its tensor table (GGML type, GGUF's ne order);
    the CLI prints them as Ollama's showInfo does."""
    import httpx

    from velollm.commands.show import metadata_value
    from velollm.engine.loader.gguf_file import GGUFFile

    with GGUFFile(fixtures.model("llama", "Q8_0").path) as f:
        table = [(t.name, t.type_name, list(reversed(t.shape))) for t in f.tensors.values()]
        vocab = len(f.metadata["tokenizer.ggml.tokens"])
    plain = httpx.post(f"{tiny_server}/api/show", json={"model": "tiny"}, timeout=60).json()
    assert plain["tensors"] == [] and "tokenizer.ggml.tokens" not in plain["model_info"]  # as before without it
    shown = httpx.post(f"{tiny_server}/api/show", json={"model": "tiny", "verbose": True}, timeout=60).json()
    assert [(t["name"], t["type"], t["shape"]) for t in shown["tensors"]] == table
    assert "Q8_0" in {t for _, t, _ in table}
    info = shown["model_info"]
    assert len(info["tokenizer.ggml.tokens"]) == vocab and info["general.architecture"] == "llama"
    assert "general.name" not in info and "tokenizer.chat_template" not in info
    bad = httpx.post(f"{tiny_server}/api/show", json={"model": "tiny", "verbose": "yes"}, timeout=60)
    assert bad.status_code == 400 and "verbose" in bad.json()["error"]
    out = velollm(tiny_server, tmp_path, "show", "tiny", "-v")
    assert out.returncode == 0, out.stderr
    metadata = out.stdout.split("  Metadata\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[0] for line in metadata] == sorted(info)
    tokens = next(line for line in metadata if line.split()[0] == "tokenizer.ggml.tokens")
    assert tokens.split(None, 1)[1] == metadata_value(info["tokenizer.ggml.tokens"]) and tokens.endswith(" more]")
    tensors = out.stdout.split("  Tensors\n")[1].split("\n\n")[0].splitlines()
    assert [line.split(maxsplit=2) for line in tensors] == [[n, t, "[" + " ".join(map(str, s)) + "]"]
                                                               for n, t, s in table]
    assert out.stdout.index("  Tensors\n") < out.stdout.index("  License\n")  # Ollama's order: before License
