"""The Ollama store: names, manifests, blobs, `velollm list`, and the HF cache lookup."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from velollm.commands import list_models as list_cmd
from velollm.engine.loader import hf_cache, ollama_store
from velollm.engine.loader.ollama_store import OllamaName, parse_name
from velollm.engine.loader.resolve import resolve_model
from velollm.errors import ModelLoadError, ModelNotFound, UnsupportedModel


def _blob(root: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / f"sha256-{digest}").write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def make_store(root: Path, gguf: Path, name=("registry.ollama.ai", "library", "tiny", "latest"),
               template: bytes = b"{{ .Prompt }}") -> Path:
    """A store laid out as `ollama pull` leaves it: manifests/<host>/<ns>/<model>/<tag>, blobs/sha256-<hex>."""
    model = _blob(root, gguf.read_bytes())
    config = _blob(root, json.dumps({"model_format": "gguf", "model_family": "llama", "model_families": ["llama"],
                                     "model_type": "1.5M", "file_type": "Q8_0", "architecture": "amd64",
                                     "os": "linux", "rootfs": {"type": "layers", "diff_ids": [model["digest"]]}}).encode())
    layers = [
        {"mediaType": "application/vnd.ollama.image.model", **model},
        {"mediaType": "application/vnd.ollama.image.template", **_blob(root, template)},
        {"mediaType": "application/vnd.ollama.image.system", **_blob(root, b"You are tiny.")},
        {"mediaType": "application/vnd.ollama.image.params",
         **_blob(root, b'{"stop":["<|eot_id|>"],"temperature":0.7,"num_ctx":4096}')},
        {"mediaType": "application/vnd.ollama.image.license", **_blob(root, b"MIT")},
    ]
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **config}, "layers": layers}
    path = root.joinpath("manifests", *name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return path


@pytest.fixture(scope="module")
def store(fixtures, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ollama") / "models"
    make_store(root, fixtures.model("llama", "Q8_0").path)
    make_store(root, fixtures.model("qwen3", "Q8_0").path, ("hf.co", "org", "Repo", "Q8_0"))
    return root


@pytest.mark.parametrize("text, parts, display", [
    ("llama3.2", ("registry.ollama.ai", "library", "llama3.2", "latest"), "llama3.2:latest"),
    ("llama3.2:3b", ("registry.ollama.ai", "library", "llama3.2", "3b"), "llama3.2:3b"),
    ("registry.ollama.ai/library/llama3.2:latest", ("registry.ollama.ai", "library", "llama3.2", "latest"), "llama3.2:latest"),
    ("user/model:tag", ("registry.ollama.ai", "user", "model", "tag"), "user/model:tag"),
    ("hf.co/org/repo:Q4_K_M", ("hf.co", "org", "repo", "Q4_K_M"), "hf.co/org/repo:Q4_K_M"),
    ("host:5000/ns/m", ("host:5000", "ns", "m", "latest"), "host:5000/ns/m:latest"),
])
def test_parse_name_like_ollama(text, parts, display):
    name = parse_name(text)
    assert name == OllamaName(*parts)
    assert name.display() == display


@pytest.mark.parametrize("bad", ["a/b/c/d", "m:", "/m", "-x", "ns.dot/m", "", "x" * 81])
def test_invalid_names(bad):
    assert parse_name(bad) is None


def test_names_resolve_to_the_same_model(store):
    sources = [resolve_model(n, ollama_models=store) for n in ("tiny", "tiny:latest",
                                                               "registry.ollama.ai/library/tiny:latest", "TINY:Latest")]
    assert {s.path for s in sources} == {sources[0].path}
    assert sources[0].path.name.startswith("sha256-")
    info = sources[0].info
    assert info.name == "tiny:latest" and info.format == "gguf" and info.family == "llama"
    assert info.default_options == {"stop": ["<|eot_id|>"], "temperature": 0.7, "num_ctx": 4096}
    assert info.default_system == "You are tiny." and info.template == "{{ .Prompt }}"
    manifest = store / "manifests/registry.ollama.ai/library/tiny/latest"
    assert info.digest == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert info.size_bytes == sum(layer["size"] for layer in json.loads(manifest.read_text())["layers"]) + \
        json.loads(manifest.read_text())["config"]["size"]


def test_the_messages_layer_is_read(store, tmp_path):
    """A model created with MESSAGE lines: its messages layer (a JSON list of {role, content})."""
    root = tmp_path / "models"
    shutil.copytree(store, root)
    manifest_path = root / "manifests/registry.ollama.ai/library/tiny/latest"
    manifest = json.loads(manifest_path.read_text())
    history = [{"role": "user", "content": "Ahoy"}, {"role": "assistant", "content": "Arr"}, {"content": "no role"}]
    manifest["layers"].append({"mediaType": "application/vnd.ollama.image.messages",
                               **_blob(root, json.dumps(history).encode())})
    manifest_path.write_text(json.dumps(manifest))
    assert resolve_model("tiny", ollama_models=root).info.default_messages == (
        {"role": "user", "content": "Ahoy"}, {"role": "assistant", "content": "Arr"})
    assert resolve_model("hf.co/org/Repo:Q8_0", ollama_models=root).info.default_messages == ()


def test_store_from_env_read_at_each_resolve(store, tmp_path, monkeypatch):
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "empty"))
    with pytest.raises(ModelNotFound, match="'tiny'"):
        resolve_model("tiny")
    monkeypatch.setenv("OLLAMA_MODELS", f' "{store}" ')  # Ollama trims spaces and quotes
    assert resolve_model("tiny").info.name == "tiny:latest"
    assert resolve_model("hf.co/org/repo:Q8_0").info.family == "qwen3"


def test_default_store_locations(tmp_path):
    home = tmp_path / "home"
    assert ollama_store.models_dir({"HOME": str(home)}) in (home / ".ollama" / "models",
                                                             Path("/usr/share/ollama/.ollama/models"))
    (home / ".ollama" / "models").mkdir(parents=True)
    assert ollama_store.models_dir({"HOME": str(home)}) == home / ".ollama" / "models"


def test_unknown_name_is_model_not_found(store):
    with pytest.raises(ModelNotFound, match="nosuchmodel:7b"):
        resolve_model("nosuchmodel:7b", ollama_models=store)


def test_manifest_with_missing_blob(store, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(store, root)
    manifest = json.loads((root / "manifests/registry.ollama.ai/library/tiny/latest").read_text())
    blob = root / "blobs" / manifest["layers"][0]["digest"].replace(":", "-")
    blob.unlink()
    with pytest.raises(ModelLoadError) as err:
        resolve_model("tiny", ollama_models=root)
    assert str(blob) in str(err.value) and "tiny:latest" in str(err.value)


@pytest.mark.parametrize("manifest", [{"config": 5, "layers": []}, {"config": {}, "layers": [1, "x"]},
                                      {"layers": [{"mediaType": 7, "digest": "sha256:" + "0" * 64}]},
                                      {"layers": [{"digest": 5}]}, {"layers": [{"size": "big"}]}, {"layers": 5}])
def test_manifest_of_the_wrong_shape_is_a_load_error(tmp_path, manifest):
    """Entries that are no layer objects were an AttributeError ('int' object has no attribute 'get'), a 500
    'internal error' for /api/show and /api/generate (found by the model-management fuzz's broken manifests)."""
    path = tmp_path / "models/manifests/registry.ollama.ai/library/odd/latest"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="odd:latest"):
        resolve_model("odd", ollama_models=tmp_path / "models")
    assert ollama_store.list_models(tmp_path / "models") == []  # skipped by the listing


@pytest.mark.parametrize("digest", ["../../../outside", "sha256:../../outside", "sha256-" + "0" * 63 + "/",
                                    "/etc/passwd"])
def test_a_manifest_digest_that_is_no_digest_never_opens_a_file(tmp_path, digest):
    """A manifest is only a file: a hand-edited digest with `../` or an absolute path would have opened a
    file outside blobs/ (the layers are read as params/template/system text)."""
    outside = tmp_path / "outside"
    outside.write_text('{"temperature": 0.1}')
    path = tmp_path / "models/manifests/registry.ollama.ai/library/odd/latest"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"layers": [{"mediaType": "application/vnd.ollama.image.params", "digest": digest}]}))
    with pytest.raises(ModelLoadError, match="odd:latest"):
        resolve_model("odd", ollama_models=tmp_path / "models")
    with pytest.raises(ModelLoadError, match="not an Ollama blob digest"):
        ollama_store.blob_path(tmp_path / "models", digest)


def test_store_models_without_local_gguf_are_unsupported(tmp_path):
    root = tmp_path / "models"
    config = _blob(root, json.dumps({"model_format": "gguf", "remote_host": "https://ollama.com:443",
                                     "remote_model": "gpt-oss:120b"}).encode())
    manifest = {"schemaVersion": 2, "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **config},
                "layers": []}
    path = root / "manifests/registry.ollama.ai/library/gpt-oss/120b-cloud"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(manifest))
    with pytest.raises(UnsupportedModel, match="cloud model"):
        resolve_model("gpt-oss:120b-cloud", ollama_models=root)
    manifest["config"] = {"mediaType": "application/vnd.docker.container.image.v1+json",
                          **_blob(root, b'{"model_format":"safetensors"}')}
    manifest["layers"] = [{"mediaType": "application/vnd.ollama.image.tensor", "name": "w", **_blob(root, b"x")}]
    path.write_text(json.dumps(manifest))
    with pytest.raises(UnsupportedModel, match="no GGUF model layer"):
        resolve_model("gpt-oss:120b-cloud", ollama_models=root)


def test_list_models_and_command(store, capsys):
    rows = {r.name: r for r in list_cmd.collect(store)}
    assert set(rows) == {"tiny:latest", "hf.co/org/Repo:Q8_0"}
    assert rows["tiny:latest"].native and rows["tiny:latest"].quantization == "Q8_0"
    from velollm.cli import main

    assert main(["list", "--models-dir", str(store)]) == 0
    out = capsys.readouterr().out
    assert "tiny:latest" in out and "hf.co/org/Repo:Q8_0" in out and "yes" in out
    header, *lines = out.splitlines()  # Ollama's columns first (NAME ID SIZE MODIFIED), then VeloLLM's
    assert header.split() == ["NAME", "ID", "SIZE", "MODIFIED", "QUANTIZATION", "FAMILY", "CAPABILITY", "NATIVE"]
    tiny = next(line for line in lines if line.startswith("tiny:latest "))
    assert tiny.split()[1] == rows["tiny:latest"].digest[:12] and " ago " in tiny
    assert list_cmd.modified(1000.0, now=1000.0 + 90) == "About a minute ago" and list_cmd.modified(0) == "Never"
    # Ollama's `ls` alias and its name-prefix filter (`ollama ls tiny`)
    assert main(["ls", "tiny", "--models-dir", str(store)]) == 0
    out = capsys.readouterr().out
    assert "tiny:latest" in out and "hf.co/org/Repo" not in out


def test_list_marks_unsupported_models(store, tmp_path, fixtures):
    root = tmp_path / "models"
    shutil.copytree(store, root)
    bad = tmp_path / "gemma.gguf"
    data = bytearray(fixtures.model("llama", "Q8_0").path.read_bytes())
    i = data.find(b"general.architecture")
    # Re-point the architecture string ("llama", 5 bytes) at "gemma": same length, same layout.
    j = data.find(b"llama", i)
    data[j:j + 5] = b"gemma"
    bad.write_bytes(bytes(data))
    make_store(root, bad, ("registry.ollama.ai", "library", "gem", "2b"))
    rows = {r.name: r for r in list_cmd.collect(root)}
    assert not rows["gem:2b"].native and "gemma" in rows["gem:2b"].reason


def test_hf_cache_snapshot(tmp_path):
    from velollm.engine.loader.demo import write_demo

    hub = tmp_path / "hub"
    repo = hub / "models--org--tiny-model"
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    write_demo(snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert hf_cache.snapshot_folder("org/tiny-model", hub) == snap
    assert hf_cache.hub_dir({"HF_HOME": str(tmp_path)}) == hub
    assert hf_cache.hub_dir({"HF_HUB_CACHE": str(hub / "x")}) == hub / "x"
    source = resolve_model("org/tiny-model", hf_hub=hub, ollama_models=tmp_path / "none")
    assert source.path == snap and source.info.format == "safetensors"
    with pytest.raises(ModelNotFound, match="org/other"):
        resolve_model("org/other", hf_hub=hub, ollama_models=tmp_path / "none")
    # A revision is a ref or a commit: never a way out of the repo's folder.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_demo(elsewhere)
    for spec in ("org/tiny-model@../../../elsewhere", "org/tiny-model@/abs", "org/tiny-model@a//b"):
        assert hf_cache.snapshot_folder(spec, hub) is None


def test_resolve_without_paths_refuses_them_before_looking(tmp_path, monkeypatch):
    """allow_paths=False (names from network clients): paths are refused whether or not they exist, and the
    store, the HF cache and demo still resolve."""
    from velollm.engine.loader.demo import write_demo

    folder = tmp_path / "model"
    folder.mkdir()
    write_demo(folder)
    assert resolve_model(str(folder), ollama_models=tmp_path / "none").path == folder  # the default allows paths
    monkeypatch.chdir(tmp_path)
    for spec in (str(folder), "./model", "../x", "~/model", "model.gguf", "C:\\\\models\\\\x"):
        with pytest.raises(ModelNotFound, match="does not load paths sent by clients"):
            resolve_model(spec, allow_paths=False, ollama_models=tmp_path / "none")
    with pytest.raises(ModelNotFound, match="not found \\(not a file"):  # a bare relative name is not a path
        resolve_model("model", allow_paths=False, ollama_models=tmp_path / "none", hf_hub=tmp_path / "hub")
    assert resolve_model("demo", allow_paths=False, cache_dir=tmp_path / "cache").info.name == "demo"


def _with_layer(store: Path, tmp_path: Path, kind: str, data: bytes) -> Path:
    """A copy of `store` whose tiny model's `kind` layer holds `data` instead."""
    root = tmp_path / "models"
    shutil.copytree(store, root)
    manifest_path = root / "manifests/registry.ollama.ai/library/tiny/latest"
    manifest = json.loads(manifest_path.read_text())
    media = f"application/vnd.ollama.image.{kind}"
    manifest["layers"] = [layer for layer in manifest["layers"] if layer["mediaType"] != media]
    manifest["layers"].insert(0, {"mediaType": media, **_blob(root, data)})  # first: the others read after it
    manifest_path.write_text(json.dumps(manifest))
    return root


@pytest.mark.parametrize("data, why", [(b"{not json", "is not valid JSON"), (b"[1, 2]", "not a JSON object but list"),
                                       (b'"x"', "not a JSON object but str"), (b"\xff{}", "is not valid JSON")])
def test_a_params_layer_that_is_no_json_object_leaves_the_model_listed(store, tmp_path, data, why):
    """Another tool's params layer may be anything: the model stays listed and resolvable (show works), its
    options empty and the reason kept for a chat to report (it was a ModelLoadError: the model vanished from
    the listing and every route on it was a 500)."""
    root = _with_layer(store, tmp_path, "params", data)
    [model] = [m for m in ollama_store.list_models(root) if m.display_name == "tiny:latest"]
    assert model.params == {} and why in model.layer_error
    info = resolve_model("tiny", ollama_models=root).info
    assert info.default_options == {} and why in info.layer_error


@pytest.mark.parametrize("kind", ["template", "system"])
def test_text_layers_that_are_not_utf8_are_read(store, tmp_path, kind):
    """Go keeps a string's bytes as they are: a template or system layer that is not UTF-8 is read, its bad bytes
    as U+FFFD (it was a UnicodeDecodeError: a 500 on /api/show and on every chat)."""
    root = _with_layer(store, tmp_path, kind, b"\xffhi {{ .Prompt }}")
    model = ollama_store.find_model("tiny", root)
    assert getattr(model, kind) == "\ufffdhi {{ .Prompt }}"


@pytest.mark.parametrize("data", [b"{not json", b"\xff", b"[1]"])
def test_a_config_blob_that_is_no_json_object_reads_as_empty(store, tmp_path, data):
    """The config blob only feeds listings (family, file type): one another tool wrote badly leaves the model
    listed and loadable (it was a ModelLoadError: the model dropped from /api/tags, a 500 on /api/show)."""
    root = tmp_path / "models"
    shutil.copytree(store, root)
    manifest_path = root / "manifests/registry.ollama.ai/library/tiny/latest"
    manifest = json.loads(manifest_path.read_text())
    manifest["config"].update(_blob(root, data))
    manifest_path.write_text(json.dumps(manifest))
    assert "tiny:latest" in [m.display_name for m in ollama_store.list_models(root)]
    assert ollama_store.find_model("tiny", root).config == {}
    assert resolve_model("tiny", ollama_models=root).info.default_options["temperature"] == 0.7


def test_a_messages_layer_that_is_not_json_leaves_the_model_listed(store, tmp_path):
    """As a bad params layer: listed and resolvable with no messages, the reason kept for a chat (it was a
    ModelLoadError: dropped from the listing, a 500 on /api/show and on a chat)."""
    root = _with_layer(store, tmp_path, "messages", b"[{not json")
    assert "tiny:latest" in [m.display_name for m in ollama_store.list_models(root)]
    info = resolve_model("tiny", ollama_models=root).info
    assert info.default_messages == () and "messages layer" in info.layer_error and "not valid JSON" in info.layer_error
    assert info.default_options["temperature"] == 0.7  # a good params layer after it does not clear the reason
