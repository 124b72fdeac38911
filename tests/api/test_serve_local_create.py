"""POST /api/create on a `velollm serve` without an upstream (its own Ollama store), through the official `ollama`
client and httpx: a quantize source refused with a 400 before any progress, clients that leave a quantization
(streamed or not) stop it, the error of a FROM path that does not exist."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from tests.gguf.test_ollama_store import make_store
from tests.gguf.tiny_gguf import ArchSpec, bpe_tokenizer, state_dict, write_gguf
from tests.serve_process import start_serve, stop_serve

ENGINE = ("--max-model-len", "256", "--kv-cache-memory", "16MiB")


def _gguf(path: Path, qtype: str, spec: ArchSpec | None = None) -> Path:
    spec, tok = spec or ArchSpec("llama", layers=2), bpe_tokenizer("llama-bpe")
    return write_gguf(path, spec, state_dict(spec, len(tok.tokens), seed=9), tok, qtype)


def _say_f16(path: Path) -> Path:
    """`general.file_type` rewritten in place to MOSTLY_F16, whatever the tensors hold."""
    import gguf

    field = gguf.GGUFReader(path, "r+").fields["general.file_type"]
    field.parts[field.data[0]][0] = int(gguf.LlamaFileType.MOSTLY_F16)
    return path


SLOW = ArchSpec("llama", hidden=512, layers=16, heads=8, kv_heads=4, intermediate=1536)  # ~100 MB: seconds to quantize


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, Path, Path]]:
    """(url, store, log) of a server with no upstream, quantizing on one thread, on a store holding `f16` (a
    2-layer F16 llama) and `slow` (an F16 llama that takes seconds to quantize)."""
    root = tmp_path_factory.mktemp("create")
    store = root / "models"
    make_store(store, _gguf(root / "f16.gguf", "F16"), ("registry.ollama.ai", "library", "f16", "latest"))
    make_store(store, _gguf(root / "slow.gguf", "F16", SLOW), ("registry.ollama.ai", "library", "slow", "latest"))
    proc, url, log, _ = start_serve(root, "--no-upstream", "--quantize-threads", "1", *ENGINE,
                                    env={"OLLAMA_MODELS": str(store)})
    yield url, store, log
    stop_serve(proc)


def _blobs(store: Path) -> set[str]:
    return {p.name for p in (store / "blobs").iterdir()}


def test_a_header_saying_f16_over_quantized_weights_is_a_400_before_any_progress(served, tmp_path):
    url, store, _ = served
    lying = _say_f16(_gguf(tmp_path / "lying.gguf", "Q8_0"))
    client = ollama.Client(host=url, timeout=120)
    digest = client.create_blob(lying)
    before = _blobs(store)
    body = {"model": "lying-q4", "files": {"lying.gguf": digest}, "quantize": "q4_K_M"}
    for stream in (True, False):
        r = httpx.post(f"{url}/api/create", json={**body, "stream": stream}, timeout=60)
        assert r.status_code == 400 and r.headers["content-type"].startswith("application/json"), r.text
        assert r.json() == {"error": "quantization is only supported for F16, BF16 and F32 models, not Q8_0 "
                                     "(the type its weights are stored as)"}
    with pytest.raises(ollama.ResponseError) as err:
        list(client.create(model="lying-q4", files={"lying.gguf": digest}, quantize="q4_K_M", stream=True))
    assert err.value.status_code == 400 and "not Q8_0" in err.value.error
    assert _blobs(store) == before and not (store / "manifests/registry.ollama.ai/library/lying-q4").exists()
    assert ollama.Client(host=url).show("f16").details.family == "llama"  # the server is fine


def _wait_for(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


STOPPED = "store operation stopped: its client left"


def _left_alone(store: Path, before: set[str], *names: str) -> None:
    """No temporary blob, no new blob and no manifest for `names`."""
    assert _blobs(store) == before
    for name in names:
        assert not (store / "manifests/registry.ollama.ai/library" / name).exists(), name


def test_a_client_that_leaves_a_create_that_is_not_streamed_stops_it(served):
    url, store, log = served
    before, stopped = _blobs(store), log.read_text().count(STOPPED)
    with pytest.raises(httpx.ReadTimeout):  # leaves after 1 s of a quantization that takes several
        httpx.post(f"{url}/api/create", json={"model": "gone-q4", "from": "slow", "quantize": "q4_K_M",
                                              "stream": False}, timeout=httpx.Timeout(60, read=1.0))
    assert _wait_for(lambda: log.read_text().count(STOPPED) == stopped + 1), log.read_text()[-3000:]
    _left_alone(store, before, "gone-q4")
    ok = ollama.Client(host=url, timeout=120).create(model="small-q8", from_="f16", quantize="q8_0")
    assert ok.status == "success"  # the store lock was let go
    assert ollama.Client(host=url).delete("small-q8").status == "success"


def test_a_client_that_leaves_before_the_first_progress_line_stops_the_create(served):
    """The second create waits for the store (the first holds it while it quantizes), so its client leaves before
    any line was sent: once the store is free it stops at its first line, as the first does once its client
    leaves mid-stream."""
    url, store, log = served
    before, stopped = _blobs(store), log.read_text().count(STOPPED)
    body = {"from": "slow", "quantize": "q4_K_M", "stream": True}
    with httpx.stream("POST", f"{url}/api/create", json={**body, "model": "first-q4"}, timeout=60) as first:
        assert first.status_code == 200
        lines = first.iter_lines()  # (kept: a dropped iterator closes the response)
        assert next(lines)  # the first holds the store now
        with pytest.raises(httpx.ReadTimeout), httpx.stream(
                "POST", f"{url}/api/create", json={**body, "model": "second-q4"},
                timeout=httpx.Timeout(60, read=1.0)) as second:
            second.read()
    assert _wait_for(lambda: log.read_text().count(STOPPED) == stopped + 2), log.read_text()[-3000:]
    _left_alone(store, before, "first-q4", "second-q4")


def test_from_a_path_that_does_not_exist_names_the_path(served, tmp_path):
    """`FROM /missing.gguf`: the CLI finds no file there and sends the path as `from` (as Ollama's does); the answer
    is a 400 that names the path, not a model that was not found."""
    from tests.cli.conftest import velollm

    url, store, _ = served
    missing = tmp_path / "missing.gguf"
    client = ollama.Client(host=url, timeout=60)
    for path in (str(missing), "./weights/missing.gguf", "~/missing.gguf"):
        with pytest.raises(ollama.ResponseError) as err:
            client.create(model="from-nothing", from_=path)
        assert err.value.status_code == 400, err.value
        assert err.value.error.startswith(f"FROM {path}: no such file or directory"), err.value.error
    (tmp_path / "Modelfile").write_text(f"FROM {missing}\n")
    out = velollm(url, tmp_path, "create", "from-nothing", "-f", str(tmp_path / "Modelfile"))
    assert out.returncode == 1 and f"FROM {missing}: no such file or directory" in out.stderr, out.stderr
    assert not (store / "manifests/registry.ollama.ai/library/from-nothing").exists()
    with pytest.raises(ollama.ResponseError) as err:  # a name stays a name
        client.create(model="from-nothing", from_="nope")
    assert (err.value.status_code, err.value.error.split(":")[0]) == (404, "model 'nope' not found")


def test_several_license_layers_as_ollama_shows_them(served, tmp_path):
    """/api/show's `license` joins the layers by a newline (Ollama's strings.Join(m.License, "\\n")); its Modelfile
    has one LICENSE block a layer (Ollama's Model.String), which `create -f` makes into the same layers again."""
    from tests.cli.conftest import velollm

    url = served[0]
    client = ollama.Client(host=url, timeout=60)
    texts = ["MIT", "Acceptable Use Policy\nno harm"]
    assert client.create(model="two-licenses", from_="f16", license=texts).status == "success"
    shown = client.show("two-licenses")
    assert shown.license == "MIT\nAcceptable Use Policy\nno harm"
    blocks = [line for line in shown.modelfile.splitlines() if line.startswith("LICENSE")]
    assert blocks == ["LICENSE MIT", 'LICENSE "Acceptable Use Policy'], shown.modelfile
    assert '\nLICENSE "Acceptable Use Policy\nno harm"\n' in shown.modelfile
    (tmp_path / "Modelfile").write_text(shown.modelfile)
    out = velollm(url, tmp_path, "create", "two-licenses-again", "-f", str(tmp_path / "Modelfile"))
    assert out.returncode == 0, out.stderr
    again = client.show("two-licenses-again")
    assert (again.license, again.modelfile.count("\nLICENSE ")) == (shown.license, 2)
    for name in ("two-licenses", "two-licenses-again"):
        assert client.delete(name).status == "success"


def test_quantize_threads_sets_the_threads_a_quantization_runs_on(served, tmp_path):
    """`velollm serve --quantize-threads 1`: the quantization runs on one thread (the server's log says so, and
    the bytes are those of any thread count); 0 is refused at start."""
    import os
    import subprocess
    import sys

    url, _, log = served
    client = ollama.Client(host=url, timeout=120)
    assert client.create(model="one-thread", from_="f16", quantize="q8_0").status == "success"
    assert " to Q8_0 on 1 thread\n" in log.read_text(), log.read_text()[-3000:]
    assert client.delete("one-thread").status == "success"
    refused = subprocess.run([sys.executable, "-m", "velollm.cli", "serve", "--quantize-threads", "0", "--no-upstream",
                              "--port", "0"], check=False, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "VELOLLM_CACHE": str(tmp_path)})
    assert refused.returncode != 0 and "--quantize-threads" in refused.stderr + refused.stdout, refused


def test_a_create_that_fails_removes_the_blobs_it_wrote(served):
    """The manifest cannot be written (a file stands where its folder goes): the layers and the config blob the
    create wrote go again; the blobs it reused stay."""
    url, store, _ = served
    blocker = store / "manifests/registry.ollama.ai/library/blocked"
    blocker.write_text("not a folder")
    before = _blobs(store)
    try:
        with pytest.raises(ollama.ResponseError) as err:
            ollama.Client(host=url, timeout=60).create(model="blocked", from_="f16", system="a system prompt only "
                                                       "this create writes", license=["one", "two"])
        assert err.value.status_code == 500, err.value
        assert _blobs(store) == before
    finally:
        blocker.unlink()


def _old(path: Path, hours: float = 2) -> Path:
    stamp = time.time() - hours * 3600
    os.utime(path, (stamp, stamp))
    return path


@pytest.mark.parametrize("noprune", ["", "1"])
def test_unused_blobs_an_hour_old_are_pruned_at_start_unless_ollama_noprune(tmp_path, noprune):
    """As Ollama's server starts: the blobs no manifest names (a failed create's upload, a write that died) go once
    they are an hour old; fresh ones (a create of another process sharing the store) and named ones stay; what
    went is logged. OLLAMA_NOPRUNE keeps them all."""
    store = tmp_path / "models"
    make_store(store, _gguf(tmp_path / "f16.gguf", "F16"), ("registry.ollama.ai", "library", "f16", "latest"))
    named = {p.name for p in (store / "blobs").iterdir()}
    for name in named:
        _old(store / "blobs" / name)
    orphan = store / "blobs" / f"sha256-{'a' * 64}"
    orphan.write_bytes(b"uploaded, then the create failed")
    _old(orphan)
    died = store / "blobs/sha256-1234567890"
    died.write_bytes(b"half a blob")
    _old(died)
    fresh = store / "blobs" / f"sha256-{'b' * 64}"
    fresh.write_bytes(b"another process's create in flight")
    other = store / "blobs/notes.txt"
    other.write_text("not a blob")
    _old(other)
    proc, url, log, _ = start_serve(tmp_path, "--no-upstream", *ENGINE,
                                    env={"OLLAMA_MODELS": str(store), "OLLAMA_NOPRUNE": noprune})
    try:
        left = _blobs(store)
        assert ollama.Client(host=url, timeout=60).show("f16").details.family == "llama"
    finally:
        stop_serve(proc)
    kept = named | {fresh.name, other.name}
    if noprune:
        assert left == kept | {orphan.name, died.name}
        assert "pruned" not in log.read_text()
    else:
        assert left == kept
        text = log.read_text()
        for path in (orphan, died):
            assert f"pruned unused blob {path} " in text, text[-3000:]
        assert "pruned 2 unused blobs from" in text


def _broken(good: Path, out: Path, how: str) -> Path:
    data = good.read_bytes()
    broken = {"bad magic": b"GGUX" + data[4:], "truncated header": data[:200], "tensor past the end": data[:-64]}
    out.write_bytes(broken[how])
    return out


@pytest.mark.parametrize("how, says", [("bad magic", "bad magic, not a GGUF file"),
                                       ("truncated header", "truncated GGUF header"),
                                       ("tensor past the end", "truncated GGUF file, tensor ")])
def test_a_broken_source_gguf_is_a_400_naming_the_problem_before_any_progress(served, tmp_path, how, says):
    """A stored model whose GGUF blob is broken (a bad magic, a header cut short, a tensor's data past the end of
    the file), quantized FROM it: Ollama's JSON error naming the problem (not the server's paths), not a 500."""
    url, store, _ = served
    name = "broken-" + how.replace(" ", "-")
    make_store(store, _broken(_gguf(tmp_path / "good.gguf", "F16"), tmp_path / "broken.gguf", how),
               ("registry.ollama.ai", "library", name, "latest"))
    before = _blobs(store)
    body = {"model": f"{name}-q4", "from": name, "quantize": "q4_K_M"}
    for stream in (True, False):
        r = httpx.post(f"{url}/api/create", json={**body, "stream": stream}, timeout=60)
        assert r.status_code == 400 and r.headers["content-type"].startswith("application/json"), r.text
        error = r.json()["error"]
        assert says in error and str(store) not in error, error
    with pytest.raises(ollama.ResponseError) as err:
        list(ollama.Client(host=url, timeout=120).create(model=f"{name}-q4", from_=name, quantize="q4_K_M",
                                                         stream=True))
    assert err.value.status_code == 400 and says in err.value.error
    assert _blobs(store) == before and not (store / f"manifests/registry.ollama.ai/library/{name}-q4").exists()
    if how != "bad magic":  # the same blob named in `files`: checked when the layer is made, the path left out too
        digest = next(layer["digest"] for layer in json.loads((store / f"manifests/registry.ollama.ai/library/{name}"
                                                                         "/latest").read_text())["layers"]
                      if layer["mediaType"].endswith(".model"))
        files = {"model": f"{name}-q4", "files": {"broken.gguf": digest}, "quantize": "q4_K_M"}
        r = httpx.post(f"{url}/api/create", json=files, timeout=60)
        assert r.status_code == 400 and says in r.json()["error"] and str(store) not in r.json()["error"], r.text


@pytest.mark.parametrize("value, noprune", [("", False), ("1", True), ("false", False), ("'false'", False),
                                            (' "0" ', False), ("yes", True), ("'", False), ("' '", True)])
def test_ollama_noprune_is_read_as_ollamas_envconfig_bool(value, noprune):
    """envconfig.Var trims spaces, then quotes; Bool: empty is false, ParseBool's false words false, the rest true."""
    from velollm.commands.serve import go_bool

    assert go_bool(value) is noprune
