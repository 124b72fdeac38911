"""`velollm list` marks embedding models of the Ollama store as native, with the embedding capability."""

from __future__ import annotations

from pathlib import Path

from velollm.commands import list_models as list_cmd

from tests.gguf.test_ollama_store import make_store

from . import encoder_fixtures as fx


def test_list_shows_embedding_models(tmp_path: Path, tiny_bert_dir: Path, tiny_nomic_dir: Path, capsys):
    root = tmp_path / "models"
    bert = fx.write_encoder_gguf(tmp_path / "bert.gguf", tiny_bert_dir, "bert")
    nomic = fx.write_encoder_gguf(tmp_path / "nomic.gguf", tiny_nomic_dir, "nomic-bert")
    make_store(root, bert, ("registry.ollama.ai", "library", "tiny-bert", "latest"))
    make_store(root, nomic, ("registry.ollama.ai", "library", "tiny-nomic", "latest"))
    rows = {r.name: r for r in list_cmd.collect(root)}
    for name in ("tiny-bert:latest", "tiny-nomic:latest"):
        assert rows[name].native and rows[name].capability == "embedding", rows[name]
    from velollm.cli import main

    assert main(["list", "--models-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "CAPABILITY" in out and "embedding" in out
