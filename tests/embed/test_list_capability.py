"""`velollm list` marks embedding models of the Ollama store as native, with the embedding capability."""

from __future__ import annotations

from pathlib import Path

from tests.gguf.test_ollama_store import make_store
from velollm.commands import list_models as list_cmd

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


def test_an_embedding_folder_has_its_files_digest(tiny_bert_dir: Path):
    """/api/tags and /api/ps gave an embedding model served from a folder (a sentence-transformers download, a path)
    the digest "", so `velollm list` and `ps` showed no ID for it, where a generation model's folder has the digest
    of its files (hf_folder.folder_digest, what the response cache identifies a folder by)."""
    from velollm.embed.folder import folder_source
    from velollm.engine.loader.hf_folder import folder_digest

    digest = folder_source(tiny_bert_dir).info.digest
    assert digest == folder_digest(tiny_bert_dir) and len(digest) == 64
