"""velollm/api/local_create.py on a store laid out as `ollama pull` leaves it (no server): what the
model-management fuzz found."""

from __future__ import annotations

import json

import pytest

from tests.gguf.test_ollama_store import make_store
from velollm.api.local_create import create_model
from velollm.engine.loader import ollama_store
from velollm.errors import InvalidRequest

BROKEN = {
    "broken-json": b"{not json", "broken-list": b"[1, 2]",
    "broken-layers": b'{"config": 5, "layers": [1, "x", {"digest": 5}]}',
    "no-digest": json.dumps({"config": {"digest": "sha256:" + "0" * 64}, "layers": [{"mediaType": "x"}]}).encode(),
    "missing-blob": json.dumps({"config": {"digest": "sha256:" + "0" * 64}, "layers": []}).encode(),
}


@pytest.fixture
def root(tmp_path):
    (tmp_path / "one.gguf").write_bytes(b"GGUF one")
    make_store(tmp_path / "models", tmp_path / "one.gguf", ("registry.ollama.ai", "library", "one", "latest"))
    for name, manifest in BROKEN.items():
        folder = tmp_path / "models/manifests/registry.ollama.ai/library" / name
        folder.mkdir(parents=True)
        (folder / "latest").write_bytes(manifest)
    return tmp_path / "models"


@pytest.mark.parametrize("base", sorted(BROKEN))
def test_a_broken_base_model_is_a_400_naming_it(root, base):
    """A manifest a partial pull or a hand edit left (not JSON, no object, layers without digests, a missing
    blob) was a 500 'internal error' (AttributeError, KeyError); it is the client's 400, and nothing is written."""
    before = sorted(root.rglob("*"))
    with pytest.raises(InvalidRequest, match=f"cannot create from model '{base}': its manifest .* is broken"):
        create_model({"model": "new", "from": base, "system": "hi"}, root)
    assert sorted(root.rglob("*")) == before


def test_create_from_a_sound_base_still_works(root):
    lines = create_model({"model": "new", "from": "one", "system": "hi"}, root)
    assert lines[-1] == {"status": "success"}
    assert ollama_store.find_model("new", root).system == "hi"


def test_a_failed_create_answers_its_own_error_when_its_blobs_cannot_be_removed(tmp_path, monkeypatch, caplog):
    """The manifest cannot be written (a full disk) and the blobs written before it cannot be removed: the answer
    is the disk's error, not the removal's; the removal's is logged."""
    from pathlib import Path

    from velollm.engine.loader import ollama_store_edit

    (tmp_path / "one.gguf").write_bytes(b"GGUF one")
    root = tmp_path / "models"
    make_store(root, tmp_path / "one.gguf", ("registry.ollama.ai", "library", "one", "latest"))
    real_write = ollama_store_edit.write_file

    def write_file(path, data, tries=5):
        if "manifests" in path.parts:
            raise OSError(28, "No space left on device", str(path))
        return real_write(path, data, tries)

    def unlink(path, missing_ok=False):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(ollama_store_edit, "write_file", write_file)
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(OSError) as err, caplog.at_level("WARNING", logger="velollm.api.local_create"):
        create_model({"model": "new", "from": "one", "system": "a system prompt only this create writes"}, root)
    assert err.value.errno == 28, err.value
    assert "could not remove the blobs of a failed create: [Errno 13] Permission denied" in caplog.text
