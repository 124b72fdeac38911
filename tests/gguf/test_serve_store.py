"""`velollm serve --model tiny` serves an Ollama-store model through both APIs under that name."""

from __future__ import annotations

from pathlib import Path

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


def _show_is_ollamas(url: str, model: str, gguf: Path) -> tuple[dict, list]:
    """/api/show as Ollama's GetModelInfo answers for a GGUF model, with and without `verbose`: the file's own keys
    (general.name and the chat template left out, general.parameter_count counted from the tensors) and its
    tensor table (GGML type, GGUF's ne order) either way; without `verbose` each array with items is null (the
    vocabulary, the merges, the token types), an empty one [], every other value as with it."""
    import httpx

    from velollm.engine.loader.gguf_file import GGUFFile

    with GGUFFile(gguf) as f:
        table = [(t.name, t.type_name, list(reversed(t.shape))) for t in f.tensors.values()]
        vocab = len(f.metadata["tokenizer.ggml.tokens"])
        count = sum(t.num_elements for t in f.tensors.values())
    shown = httpx.post(f"{url}/api/show", json={"model": model, "verbose": True}, timeout=60).json()
    assert [(t["name"], t["type"], t["shape"]) for t in shown["tensors"]] == table
    info = shown["model_info"]
    assert len(info["tokenizer.ggml.tokens"]) == vocab and info["general.architecture"] == "llama"
    assert "general.name" not in info and "tokenizer.chat_template" not in info
    assert info["general.parameter_count"] == count
    plain = httpx.post(f"{url}/api/show", json={"model": model}, timeout=60).json()
    assert plain["tensors"] == shown["tensors"] and set(plain["model_info"]) == set(info)
    arrays = {k for k, v in info.items() if isinstance(v, list) and v}
    assert {"tokenizer.ggml.tokens", "tokenizer.ggml.token_type"} <= arrays
    assert plain["model_info"] == {k: None if k in arrays else v for k, v in info.items()}
    # the official client takes it (its model_info mapping holds the nulls)
    assert ollama.Client(host=url).show(model).modelinfo["tokenizer.ggml.tokens"] is None
    return info, table


def test_show_model_info_and_tensors_as_ollamas(tiny_server, tmp_path, fixtures):
    """A store model, then the same GGUF served from its path."""
    path = fixtures.model("llama", "Q8_0").path
    _show_is_ollamas(tiny_server, "tiny", path)
    proc, url, _log = start_live(tmp_path, "--model", str(path), "--max-model-len", "256")
    try:
        model = ollama.Client(host=url).list().models[0].model
        _show_is_ollamas(url, model, path)
    finally:
        stop_live(proc)


def test_show_verbose_lists_the_files_metadata_and_tensors(tiny_server, tmp_path, fixtures):
    """`ollama show -v`: the CLI prints /api/show's metadata and tensors as Ollama's showInfo does."""
    import httpx

    from velollm.commands.show import metadata_value

    info, table = _show_is_ollamas(tiny_server, "tiny", fixtures.model("llama", "Q8_0").path)
    assert "Q8_0" in {t for _, t, _ in table}
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
