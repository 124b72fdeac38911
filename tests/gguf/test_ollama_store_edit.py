"""velollm/engine/loader/ollama_store_edit.py on a store laid out as `ollama pull` leaves it (no server)."""

from __future__ import annotations

import hashlib
import os

import pytest

from velollm.engine.loader import ollama_store
from velollm.engine.loader import ollama_store_edit as edit
from velollm.errors import InvalidRequest, ModelNotFound

from .test_ollama_store import make_store


@pytest.fixture
def root(tmp_path):
    for name, weights in (("one", b"GGUF one"), ("two", b"GGUF two")):
        (tmp_path / f"{name}.gguf").write_bytes(weights)
        make_store(tmp_path / "models", tmp_path / f"{name}.gguf", ("registry.ollama.ai", "library", name, "latest"))
    make_store(tmp_path / "models", tmp_path / "one.gguf", ("hf.co", "Org", "Repo", "Q8_0"))
    return tmp_path / "models"


def test_delete_removes_only_what_no_other_manifest_names(root):
    two = ollama_store.find_model("two", root)
    one_blobs = edit.manifest_digests(ollama_store.find_model("one", root).manifest_path)
    edit.delete_model("TWO:latest", root)  # names compare case-insensitively
    assert ollama_store.find_model("two", root) is None
    assert not two.model_path.exists()  # its weights were its own
    assert all(ollama_store.blob_path(root, d).exists() for d in one_blobs)  # shared layers stay
    assert not (root / "manifests/registry.ollama.ai/library/two").exists()
    edit.delete_model("hf.co/org/repo:Q8_0", root)
    assert not (root / "manifests/hf.co").exists()  # every folder it left empty
    assert ollama_store.find_model("one", root).model_path.exists()  # still named by `one`
    with pytest.raises(ModelNotFound, match="model 'two' not found"):
        edit.delete_model("two", root)
    with pytest.raises(InvalidRequest, match='name "a/b/c/d" is invalid'):
        edit.delete_model("a/b/c/d", root)


def test_copy_writes_the_same_manifest_under_the_new_name(root):
    edit.copy_model("one", "user/mine:v1", root)
    copied = ollama_store.find_model("user/mine:v1", root)
    assert copied.digest == ollama_store.find_model("one", root).digest  # the same bytes
    edit.copy_model("two", "USER/MINE:V1", root)  # an existing name, in another case: replaced in place
    assert [p.name for p in (root / "manifests/registry.ollama.ai/user/mine").iterdir()] == ["v1"]
    assert ollama_store.find_model("user/mine:v1", root).digest == ollama_store.find_model("two", root).digest
    with pytest.raises(ModelNotFound, match='model "nope" not found'):
        edit.copy_model("nope", "x", root)
    with pytest.raises(InvalidRequest, match='source "" is invalid'):
        edit.copy_model("", "x", root)


def test_a_blob_is_kept_only_when_its_digest_matches(root):
    data = os.urandom(100_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    writer = edit.BlobWriter(root, digest)
    writer.write(data[:5000])
    writer.write(data[5000:])
    writer.commit()
    assert edit.has_blob(root, digest) and ollama_store.blob_path(root, digest).read_bytes() == data
    wrong = "sha256:" + "0" * 64
    writer = edit.BlobWriter(root, wrong)
    writer.write(data)
    with pytest.raises(InvalidRequest, match=f'digest mismatch, expected "{wrong}", got "{digest}"'):
        writer.commit()
    assert not edit.has_blob(root, wrong)
    assert not [p for p in (root / "blobs").iterdir() if len(p.name) != len("sha256-") + 64]  # no temp file left
    for bad in ("sha256:abc", "md5:" + "0" * 64, "sha256:../../" + "0" * 58):
        with pytest.raises(InvalidRequest, match="invalid digest format"):
            edit.check_digest(bad)


def test_a_host_past_the_file_name_limit_is_not_found_or_refused(root):
    """Ollama takes hosts of up to 350 characters; no folder name is that long: a lookup is 'not found' and a
    write is a 400 naming the limit, never ENAMETOOLONG as a store failure (the fuzz suite's 500)."""
    from velollm.api.local_create import create_model

    long_name = "h" * 300 + "/ns/m"
    assert ollama_store.parse_name(long_name) is not None  # a valid name all the same
    assert ollama_store.find_model(long_name, root) is None
    with pytest.raises(ModelNotFound):
        edit.delete_model(long_name, root)
    with pytest.raises(ModelNotFound):
        edit.copy_model(long_name, "x", root)
    with pytest.raises(InvalidRequest, match="longer than 255 characters"):
        edit.copy_model("one", long_name, root)
    with pytest.raises(InvalidRequest, match="longer than 255 characters"):
        create_model({"model": long_name, "from": "one"}, root)
    with pytest.raises(ModelNotFound):
        create_model({"model": "x", "from": long_name}, root)
    assert not list(root.glob("manifests/hhh*"))



@pytest.mark.parametrize("value", [10**400, [1, -(10**400)]], ids=["10**400", "in a list"])
def test_a_parameter_no_float_holds_is_a_400_and_nothing_is_written(root, value):
    """Created, the model's /api/show was a 500 ever after (go_value's float() of it); Ollama's decoder refuses
    the body."""
    from velollm.api.local_create import create_model

    before = sorted(root.rglob("*"))
    with pytest.raises(InvalidRequest, match="beyond the float range") as err:
        create_model({"model": "x", "from": "one", "parameters": {"num_ctx": value}}, root)
    assert err.value.param == "parameters.num_ctx" and sorted(root.rglob("*")) == before
    create_model({"model": "x", "from": "one", "parameters": {"num_ctx": 10**300}}, root)  # a float64 holds it
    assert ollama_store.find_model("x", root) is not None


def test_changes_at_the_same_time_are_not_file_system_errors(root, monkeypatch):
    """What the fuzz suite's races (tests/fuzz test_native_admin_races) hit as 500s, one at a time: a folder
    removed during a listing, a manifest deleted between its lookup and its unlink or read, a folder pruned
    between its mkdir and the temporary file written into it."""
    import shutil
    import tempfile
    from pathlib import Path

    real_scandir = os.scandir

    def scandir(path):
        if not isinstance(path, int) and Path(path).name == "two":  # a delete prunes it as the listing gets there
            shutil.rmtree(path)
        return real_scandir(path)

    with monkeypatch.context() as m:
        m.setattr(ollama_store.os, "scandir", scandir)
        assert sorted(p.parts[-2] for p in ollama_store.manifest_paths(root)) == ["Repo", "one"]
    assert ollama_store.find_model("two", root) is None

    real_digests = edit.manifest_digests

    def digests_then_gone(path):  # another delete of the same model wins between lookup and unlink
        found = real_digests(path)
        path.unlink()
        return found

    with monkeypatch.context() as m:
        m.setattr(edit, "manifest_digests", digests_then_gone)
        with pytest.raises(ModelNotFound):
            edit.delete_model("one", root)

    edit.copy_model("hf.co/org/repo:Q8_0", "source", root)
    calls = []

    def read_then_gone(store, path):  # deleted while read: the lookup again says not found
        calls.append(path)
        path.unlink()
        raise FileNotFoundError(path)

    with monkeypatch.context() as m:
        m.setattr(ollama_store, "read_manifest", read_then_gone)
        assert ollama_store.find_model("source", root) is None and len(calls) == 1

    real_mkstemp, failed = tempfile.mkstemp, []

    def mkstemp(*args, **kwargs):  # the folder was pruned between mkdir and mkstemp, once
        if not failed:
            failed.append(1)
            raise FileNotFoundError("pruned")
        return real_mkstemp(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(edit.tempfile, "mkstemp", mkstemp)
        edit.copy_model("hf.co/org/repo:Q8_0", "copied", root)
    assert failed and ollama_store.find_model("copied", root) is not None


def test_prune_removes_nothing_when_a_manifest_or_its_folder_cannot_be_read(root, monkeypatch):
    """What no manifest names goes; but a folder of manifests that cannot be listed (its manifests unknown) or a
    manifest that is not one (layers not a list: Ollama's Unmarshal fails) stops the prune, not the server."""
    from pathlib import Path

    orphan = root / "blobs" / f"sha256-{'a' * 64}"
    orphan.write_bytes(b"no manifest names it")
    real_scandir = os.scandir

    def scandir(path):
        if not isinstance(path, int) and Path(path).name == "library":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    with monkeypatch.context() as m:
        m.setattr(ollama_store.os, "scandir", scandir)
        assert edit.prune_blobs(root, min_age_s=0) == []
        # (the listing that skips such a folder would see hf.co's manifest alone: `two`'s weights unnamed)
        assert [p.parts[-4] for p in ollama_store.manifest_paths(root)] == ["hf.co"]
    odd = root / "manifests/registry.ollama.ai/library/odd/latest"
    odd.parent.mkdir()
    for text in ('{"schemaVersion": 2, "layers": 5}', "[" * 100_000):  # (the second past Python's json stack)
        odd.write_text(text)
        assert edit.prune_blobs(root, min_age_s=0) == []
    odd.unlink()
    died = root / "blobs/.tmp-k3j2h1"  # write_file's temporary blob, its create killed
    died.write_bytes(b"half a config")
    assert edit.prune_blobs(root, min_age_s=0) == [died, orphan]
    assert ollama_store.find_model("one", root).model_path.exists()


def test_a_blob_the_prune_cannot_remove_is_logged_and_the_others_still_go(root, monkeypatch, caplog):
    from pathlib import Path

    stuck, orphan = (root / "blobs" / f"sha256-{c * 64}" for c in "ab")
    for path in (stuck, orphan):
        path.write_bytes(b"no manifest names it")
    real_unlink = Path.unlink

    def unlink(path, *args, **kwargs):
        if path == stuck:
            raise PermissionError(13, "Permission denied", str(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", unlink)
    with caplog.at_level("WARNING", logger=edit.__name__):
        assert edit.prune_blobs(root, min_age_s=0) == [orphan]
    assert stuck.exists() and f"could not prune unused blob {stuck}: " in caplog.text
