"""Ollama's model management (/api/copy, /api/delete, /api/create, /api/push, HEAD|POST /api/blobs) with the
official `ollama` client and the CLI: `native`, a `velollm serve` without an upstream acting on its own
temporary Ollama store, and `front`, a second `velollm serve` whose Ollama upstream is `native` (its own
store is another, empty one), so every request through `front` is relayed and `native` does the work."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import psutil
import pytest
from gguf_fixture import write_tiny_llama_gguf

from tests.cli.conftest import velollm
from tests.gguf.test_ollama_store import make_store
from tests.serve_process import start_serve, stop_serve

ENGINE = ("--max-model-len", "256", "--kv-cache-memory", "16MiB", "--max-request-bytes", "1MiB")
RAW = {"raw": True, "options": {"temperature": 0, "num_predict": 4}}


def _manifests(store: Path) -> set[str]:
    return {"/".join(p.parts[-4:]) for p in store.glob("manifests/*/*/*/*")}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    for seed, name in enumerate(("tiny-a", "tiny-b", "solo")):
        gguf = write_tiny_llama_gguf(root / f"{name}.gguf", seed=seed)
        make_store(root / "models", gguf, ("registry.ollama.ai", "library", name, "latest"))
    return root / "models"


@pytest.fixture(scope="module")
def native(store, tmp_path_factory) -> Iterator[tuple[str, int]]:
    proc, url, _, _ = start_serve(tmp_path_factory.mktemp("native"), "--no-upstream", *ENGINE,
                                  env={"OLLAMA_MODELS": str(store)})
    yield url, proc.pid
    stop_serve(proc)


@pytest.fixture(scope="module")
def front(native, tmp_path_factory) -> Iterator[tuple[str, int]]:
    own = tmp_path_factory.mktemp("front-store")
    proc, url, _, _ = start_serve(tmp_path_factory.mktemp("front"), "--upstream", native[0], *ENGINE,
                                  env={"OLLAMA_MODELS": str(own)})
    yield url, proc.pid
    stop_serve(proc)


def _names(url: str) -> tuple[list[str], list[str]]:
    tags = [m.model for m in ollama.Client(host=url).list().models]
    ids = [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]]
    return tags, ids


def test_copy_and_delete_on_the_local_store(native, store):
    url = native[0]
    client = ollama.Client(host=url, timeout=120)
    before = client.generate(model="tiny-a", prompt="the cat", **RAW).response
    assert client.copy("tiny-a", "copied:v1").status == "success"
    assert "registry.ollama.ai/library/copied/v1" in _manifests(store)
    assert "copied:v1" in _names(url)[0] and "copied:v1" in _names(url)[1]
    assert client.generate(model="copied:v1", prompt="the cat", **RAW).response == before  # the same weights
    blobs = set(os.listdir(store / "blobs"))
    assert client.delete("copied:v1").status == "success"
    assert set(os.listdir(store / "blobs")) == blobs  # tiny-a still names every blob of the copy
    assert not (store / "manifests/registry.ollama.ai/library/copied").exists()  # its empty folder pruned
    tags, ids = _names(url)
    assert "copied:v1" not in tags and "copied:v1" not in ids and "tiny-a:latest" in tags
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="copied:v1", prompt="x", **RAW)
    assert err.value.status_code == 404

    with pytest.raises(ollama.ResponseError) as err:
        client.delete("copied:v1")
    assert (err.value.status_code, err.value.error) == (404, "model 'copied:v1' not found")
    with pytest.raises(ollama.ResponseError) as err:
        client.copy("nope", "other")
    assert (err.value.status_code, err.value.error) == (404, 'model "nope" not found')
    with pytest.raises(ollama.ResponseError) as err:
        client.copy("tiny-a", "a/b/c/d")
    assert (err.value.status_code, err.value.error) == (400, 'destination "a/b/c/d" is invalid')
    for refused in (lambda: client.delete("demo"), lambda: client.copy("tiny-a", "demo")):
        with pytest.raises(ollama.ResponseError) as err:  # pinned (the default --model): kept loaded
            refused()
        assert err.value.status_code == 400 and "--model" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:  # listed by /api/tags, but no model of the store
        client.copy("demo", "demo-copy")
    assert err.value.status_code == 404
    assert err.value.error == ('model "demo" not found in the Ollama store: this server runs it with --model (demo), '
                               "and /api/copy copies the store's models")


def test_delete_unloads_the_model_and_removes_its_blobs(native, store):
    url = native[0]
    client = ollama.Client(host=url, timeout=120)
    manifest = json.loads((store / "manifests/registry.ollama.ai/library/solo/latest").read_text())
    model_blob = store / "blobs" / manifest["layers"][0]["digest"].replace(":", "-")
    shared_blob = store / "blobs" / manifest["layers"][1]["digest"].replace(":", "-")  # the same template as tiny-a
    client.generate(model="solo", prompt="hello", **RAW)
    assert "solo:latest" in [m.model for m in client.ps().models]
    assert client.delete("solo").status == "success"
    assert "solo:latest" not in [m.model for m in client.ps().models]  # unloaded first
    assert not model_blob.exists() and shared_blob.exists()  # only what no other manifest names goes
    assert "solo:latest" not in _names(url)[0]
    with pytest.raises(ollama.ResponseError) as err:
        client.show("solo")
    assert err.value.status_code == 404


def test_management_through_an_ollama_upstream(front, native, store):
    url = front[0]
    client = ollama.Client(host=url, timeout=120)
    assert "tiny-b:latest" in _names(url)[0]
    assert client.copy("tiny-b", "via-front").status == "success"
    assert "registry.ollama.ai/library/via-front/latest" in _manifests(store)  # done by the upstream
    tags, ids = _names(url)
    assert "via-front:latest" in tags and "via-front:latest" in ids  # listed at once, through the upstream
    assert client.generate(model="via-front", prompt="one two", **RAW).response  # routed to the upstream at once
    assert client.delete("via-front").status == "success"
    assert "registry.ollama.ai/library/via-front/latest" not in _manifests(store)
    tags, ids = _names(url)
    assert "via-front:latest" not in tags and "via-front:latest" not in ids
    with pytest.raises(ollama.ResponseError) as err:
        client.delete("via-front")
    assert (err.value.status_code, err.value.error) == (404, "model 'via-front' not found")
    with pytest.raises(ollama.ResponseError) as err:
        client.copy("nope", "x")
    assert err.value.status_code == 404


def test_blobs_through_the_upstream(front, native, store, tmp_path):
    client = ollama.Client(host=front[0], timeout=120)
    data = os.urandom(3 << 20)
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    digest = client.create_blob(path)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert (store / "blobs" / digest.replace(":", "-")).read_bytes() == data  # in the upstream's store
    assert httpx.head(f"{front[0]}/api/blobs/{digest}").status_code == 200
    r = httpx.post(f"{front[0]}/api/blobs/{digest}", content=data)
    assert r.status_code == 200  # present already
    missing = "sha256:" + "0" * 64
    assert httpx.head(f"{front[0]}/api/blobs/{missing}").status_code == 404
    r = httpx.post(f"{front[0]}/api/blobs/{missing}", content=b"other bytes")
    assert r.status_code == 400 and r.json()["error"].startswith(f'digest mismatch, expected "{missing}", got')
    assert not (store / "blobs" / missing.replace(":", "-")).exists()
    assert not [p for p in os.listdir(store / "blobs") if len(p) != len("sha256-") + 64]  # no temporary file left
    for url in (front[0], native[0]):
        r = httpx.post(f"{url}/api/blobs/sha256:{'g' * 64}", content=b"x")
        assert (r.status_code, r.json()) == (400, {"error": "invalid digest format"})
        assert httpx.head(f"{url}/api/blobs/md5:abc").status_code == 400


def _peak_rss(pids: list[int], stop: threading.Event, peaks: dict[int, int]) -> None:
    procs = [psutil.Process(pid) for pid in pids]
    while not stop.is_set():
        for p in procs:
            peaks[p.pid] = max(peaks.get(p.pid, 0), p.memory_info().rss)
        time.sleep(0.02)


def test_a_large_blob_streams_through_both_servers_without_being_held(front, native, store):
    """256 MiB, past --max-request-bytes (1 MiB), sent in 1 MiB chunks: neither process grows by more than a
    small fraction of it, and the upstream's store gets the exact bytes."""
    chunk, count = os.urandom(1 << 20), 256
    digest = "sha256:" + hashlib.sha256(chunk * count).hexdigest()

    def body() -> Iterator[bytes]:
        for _ in range(count):
            yield chunk

    pids = [front[1], native[1]]
    base = {pid: psutil.Process(pid).memory_info().rss for pid in pids}
    peaks: dict[int, int] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_peak_rss, args=(pids, stop, peaks))
    watcher.start()
    try:
        r = httpx.post(f"{front[0]}/api/blobs/{digest}", content=body(), timeout=300)
    finally:
        stop.set()
        watcher.join()
    assert r.status_code == 201, r.text
    blob = store / "blobs" / digest.replace(":", "-")
    assert blob.stat().st_size == count << 20
    blob.unlink()
    for pid in pids:
        assert peaks[pid] - base[pid] < 64 << 20, f"process {pid} grew by {(peaks[pid] - base[pid]) >> 20} MiB"


def test_push_needs_an_ollama(front, native):
    for url in (native[0], front[0]):  # front relays native's answer
        client = ollama.Client(host=url, timeout=60)
        with pytest.raises(ollama.ResponseError) as err:
            client.push("tiny-a")
        assert err.value.status_code == 501 and "does not push models" in err.value.error
        with pytest.raises(ollama.ResponseError) as err:
            list(client.push("tiny-a", stream=True))
        assert "does not push models" in str(err.value)


def test_create_from_a_model_of_the_store(front, native, store):
    client = ollama.Client(host=front[0], timeout=120)  # relayed; native writes into its store
    parts = list(client.create(model="tiny-pirate", from_="tiny-a", system="Talk like a pirate.",
                               parameters={"temperature": 0.2, "stop": "<|eot_id|>"}, stream=True))
    statuses = [p.status for p in parts]
    assert statuses[0].startswith("using existing layer sha256:") and statuses[-2:] == ["writing manifest", "success"]
    assert sum(s.startswith("creating new layer") for s in statuses) == 2  # system, params
    assert "tiny-pirate:latest" in _names(front[0])[0]  # listed at once
    shown = client.show("tiny-pirate")
    assert "\nSYSTEM Talk like a pirate.\n" in shown.modelfile  # quoted only where it must be
    assert "temperature" in shown.parameters and "num_ctx" in shown.parameters  # merged over tiny-a's
    base = client.generate(model="tiny-a", prompt="the cat", **RAW).response
    assert client.generate(model="tiny-pirate", prompt="the cat", **RAW).response == base  # tiny-a's weights
    assert client.create(model="tiny-pirate", from_="tiny-a", template="{{ .Prompt }}!").status == "success"
    assert client.show("tiny-pirate").template == "{{ .Prompt }}!"  # replaced, and seen at once
    assert client.delete("tiny-pirate").status == "success"


def test_create_from_an_uploaded_gguf(front, native, store, tmp_path):
    client = ollama.Client(host=front[0], timeout=120)
    gguf = write_tiny_llama_gguf(tmp_path / "new.gguf", seed=7)
    digest = client.create_blob(gguf)
    done = client.create(model="uploaded:v2", files={"new.gguf": digest}, template="{{ .Prompt }}")
    assert done.status == "success"
    listed = {m.model: m for m in client.list().models}["uploaded:v2"]
    assert listed.details.family == "llama" and listed.details.format == "gguf"
    answer = client.generate(model="uploaded:v2", prompt="the cat", **RAW)
    assert answer.eval_count == 4
    assert answer.response != client.generate(model="tiny-a", prompt="the cat", **RAW).response  # its own weights
    assert client.delete("uploaded:v2").status == "success"
    assert not (store / "blobs" / digest.replace(":", "-")).exists()  # no other manifest named it

    for bad, status, text in [
        ({"model": "x", "from": "nope"}, 404, "model 'nope' not found"),
        ({"model": "x"}, 400, "neither 'from' or 'files' was specified"),
        ({"model": "a/b/c/d", "from": "tiny-a"}, 400, "invalid model name"),
        ({"model": "x", "files": {"m.gguf": "sha256:" + "1" * 64}}, 400, "upload it first"),
        ({"model": "x", "from": "tiny-a", "quantize": "q2"}, 400,
         "unsupported quantization type Q2 - supported types are Q4_K_S, Q4_K_M, Q8_0"),
        ({"model": "x", "from": "tiny-a", "parameters": {"stop": {"a": 1}}}, 400, "parameters.stop"),
    ]:
        for url in (native[0], front[0]):
            r = httpx.post(f"{url}/api/create", json=bad, timeout=60)
            assert r.status_code == status and text in r.json()["error"], (bad, r.text)
    assert "x:latest" not in _names(native[0])[0]


def test_create_quantized_to_q8_0(front, native, store, tmp_path):
    """`quantize: q8_0` (`ollama create -q q8_0`) without an Ollama upstream: the F32 model layer written again
    as Q8_0 (llama.cpp's bytes: tests/gguf/test_gguf_requantize.py), with Ollama's progress lines."""
    for url, name in ((front[0], "tiny-q8"), (native[0], "tiny-q8-local")):
        client = ollama.Client(host=url, timeout=120)
        parts = list(client.create(model=name, from_="tiny-a", quantize="q8_0", stream=True))
        statuses = [p.status for p in parts]
        n = statuses.index("verifying conversion")
        assert n >= 2 and statuses[:n] == ["quantizing F32 model to Q8_0"] * n, statuses  # one per tensor or so
        completed = [p.completed for p in parts[:n]]
        assert completed[0] == 0 and completed == sorted(completed) and completed[-1] == parts[0].total > 0
        assert {p.digest for p in parts[:n]} == {"0"}
        assert statuses[n + 1].startswith("creating new layer sha256:")
        assert statuses[-2:] == ["writing manifest", "success"]
        shown = client.show(name)
        assert shown.details.quantization_level == "Q8_0"
        assert client.generate(model=name, prompt="the cat", **RAW).eval_count == 4
        listed = {m.model: m for m in client.list().models}
        assert listed[f"{name}:latest"].size < listed["tiny-a:latest"].size  # a byte and a bit a weight, not four
        with pytest.raises(ollama.ResponseError) as err:  # already quantized
            client.create(model="tiny-q8-again", from_=name, quantize="q8_0")
        assert err.value.status_code == 400 and "only supported for F16, BF16 and F32 models, not Q8_0" in err.value.error
        assert client.delete(name).status == "success"
    assert not [p for p in (store / "blobs").iterdir() if not p.name.startswith("sha256-") or len(p.name) != 71]


def test_hostile_input(front, native):
    for url in (native[0], front[0]):
        r = httpx.request("DELETE", f"{url}/api/delete", json={"model": "../../../etc/passwd"})
        assert r.status_code in (400, 404) and "error" in r.json()
        r = httpx.request("DELETE", f"{url}/api/delete", content=b'{"model": ' + b"[" * 5000 + b"]" * 5000 + b"}")
        assert r.status_code == 400 and "nested" in r.json()["error"]
        r = httpx.post(f"{url}/api/copy", content=b'{"source": "' + b"a" * (2 << 20) + b'"}')
        assert r.status_code == 413  # JSON routes keep the body limit
        r = httpx.request("DELETE", f"{url}/api/delete", content=b"")
        assert r.status_code == 400
        r = httpx.post(f"{url}/api/copy", json={"source": 5, "destination": "x"})
        assert r.status_code == 400
        assert httpx.get(f"{url}/api/delete").status_code == 405


def test_cli_rm_and_cp(front, native, store, tmp_path):
    out = velollm(front[0], tmp_path, "cp", "tiny-a", "cli-copy")
    assert out.returncode == 0 and out.stdout.strip() == "copied 'tiny-a' to 'cli-copy'", out.stderr
    assert "registry.ollama.ai/library/cli-copy/latest" in _manifests(store)
    out = velollm(native[0], tmp_path, "rm", "cli-copy", "cli-copy")
    assert out.returncode == 1 and out.stdout.strip() == "deleted 'cli-copy'"
    assert "model 'cli-copy' not found" in out.stderr
    out = velollm(front[0], tmp_path, "cp", "nope", "x")
    assert out.returncode == 1 and 'model "nope" not found' in out.stderr


def _k_quant_source(path: Path) -> Path:
    """An F16 llama whose rows are multiples of 256 (every K-quant block type, no fallback), from tests/gguf."""
    from tests.gguf.tiny_gguf import ArchSpec, bpe_tokenizer, state_dict, write_gguf

    spec, tok = ArchSpec("llama", layers=2), bpe_tokenizer("llama-bpe")
    return write_gguf(path, spec, state_dict(spec, len(tok.tokens), seed=9), tok, "F16")


def test_create_quantized_to_k_quants(front, native, store, tmp_path):
    """`ollama create -q q4_K_M` / `-q q4_K_S` without an Ollama upstream: an uploaded F16 GGUF quantized with
    Ollama's tensor types and ggml's bytes (tests/gguf/test_gguf_requantize.py compares them with llama.cpp's),
    the progress streamed while it runs; the model then loads and generates."""
    from velollm.engine.loader.gguf_requantize import requantize

    source = _k_quant_source(tmp_path / "k.gguf")
    requantize(source, tmp_path / "expected.gguf", "Q4_K_M")
    expected = "sha256:" + hashlib.sha256((tmp_path / "expected.gguf").read_bytes()).hexdigest()
    for url, name in ((front[0], "tiny-k"), (native[0], "tiny-k-local")):
        client = ollama.Client(host=url, timeout=300)
        digest = client.create_blob(source)
        parts = list(client.create(model=name, files={"k.gguf": digest}, quantize="q4_K_M", stream=True))
        statuses = [p.status for p in parts]
        first = statuses.index("quantizing F16 model to Q4_K_M")
        n = statuses.index("verifying conversion")
        assert n - first > 2, statuses  # completed grows tensor by tensor
        completed = [p.completed for p in parts[first:n]]
        assert completed[0] == 0 and completed == sorted(completed) and completed[-1] == parts[first].total
        assert statuses[n + 1] == f"creating new layer {expected}" and statuses[-1] == "success"
        shown = client.show(name)
        assert shown.details.quantization_level == "Q4_K_M" and shown.details.family == "llama"
        assert client.generate(model=name, prompt="the cat", **RAW).eval_count == 4
        assert client.delete(name).status == "success"
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f"FROM {source}\n")
    out = velollm(native[0], tmp_path, "create", "cli-k", "-f", str(modelfile), "-q", "q4_K_S")
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()  # Ollama's CLI: a bar for the quantization, in the order of the stream
    bar = next(i for i, line in enumerate(lines) if line.startswith("quantizing F16 model to Q4_K_S "))
    assert re.search(r" (\S+)/\1 [kMG]?B ", lines[bar]) and lines[bar + 1] == "verifying conversion", out.stderr
    client = ollama.Client(host=native[0], timeout=120)
    assert client.show("cli-k").details.quantization_level == "Q4_K_S"
    assert client.generate(model="cli-k", prompt="the cat", **RAW).eval_count == 4
    assert client.delete("cli-k").status == "success"
    assert not [p for p in (store / "blobs").iterdir() if not p.name.startswith("sha256-") or len(p.name) != 71]


def test_cli_create_from_a_modelfile(front, native, store, tmp_path):
    """`velollm create NAME -f Modelfile`, as `ollama create`: through the upstream and on the local store."""
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text('# a pirate\nFROM tiny-a\nSYSTEM """Talk like\na pirate."""\nPARAMETER temperature 0.2\n'
                         "PARAMETER stop <|eot_id|>\nPARAMETER stop ###\nMESSAGE user Ahoy\nLICENSE MIT\n")
    for url, name in ((front[0], "cli-pirate"), (native[0], "cli-pirate-local")):
        out = velollm(url, tmp_path, "create", name, "-f", str(modelfile))
        assert out.returncode == 0, out.stderr
        lines = out.stderr.splitlines()
        assert lines[0].startswith("using existing layer sha256:") and lines[-2:] == ["writing manifest", "success"]
        shown = httpx.post(f"{url}/api/show", json={"model": name}, timeout=60).json()
        assert shown["system"] == "Talk like\na pirate." and shown["license"] == "MIT", shown
        params = [line.split(None, 1) for line in shown["parameters"].splitlines()]
        assert ["stop", '"<|eot_id|>"'] in params and ["stop", '"###"'] in params and ["temperature", "0.2"] in params
        assert shown["messages"] == [{"role": "user", "content": "Ahoy"}] and "MESSAGE user Ahoy" in shown["modelfile"]
        for path, body in (("/api/chat", {"messages": [{"role": "user", "content": "Sail"}]}),
                           ("/api/generate", {"prompt": "Sail"})):  # the MESSAGE history comes first, as in Ollama
            rendered = httpx.post(f"{url}{path}", json={"model": name, "_debug_render_only": True, **body},
                                  timeout=60).json()["_debug_info"]["rendered_template"]
            assert rendered.index("Talk like") < rendered.index("Ahoy") < rendered.index("Sail"), rendered
        sail = [{"role": "user", "content": "Sail"}]  # /v1 puts them first too (Ollama's /v1 is its chat handler)
        v1 = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0).chat.completions.create(
            model=name, messages=sail, max_tokens=4, temperature=0)
        native_answer = ollama.Client(host=url, timeout=60).chat(model=name, messages=sail,
                                                                 options={"temperature": 0, "num_predict": 4})
        assert v1.choices[0].message.content == native_answer.message.content
        assert v1.usage.prompt_tokens == native_answer.prompt_eval_count
        assert f"registry.ollama.ai/library/{name}/latest" in _manifests(store)
    (tmp_path / "weights").mkdir()
    gguf = write_tiny_llama_gguf(tmp_path / "weights" / "own.gguf", seed=11)
    modelfile.write_text("FROM ./weights/own.gguf\nTEMPLATE {{ .Prompt }}\n")
    out = velollm(front[0], tmp_path, "create", "cli-own", "-f", str(modelfile))  # uploaded through front
    assert out.returncode == 0 and "copying file sha256:" in out.stderr and out.stderr.endswith("success\n"), out.stderr
    digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert (store / "blobs" / digest.replace(":", "-")).is_file()
    out = velollm(native[0], tmp_path, "create", "cli-own2", "-f", str(modelfile))  # the blob is there: not sent
    assert out.returncode == 0 and "copying file" not in out.stderr, out.stderr
    client = ollama.Client(host=front[0], timeout=60)
    assert client.generate(model="cli-own2", prompt="the cat", **RAW).response == \
        client.generate(model="cli-own", prompt="the cat", **RAW).response
    for name in ("cli-pirate", "cli-pirate-local", "cli-own", "cli-own2"):
        assert client.delete(name).status == "success"

    for text, message in [("FROM tiny-a\nPARAMETER temprature 1\n", "unknown parameter 'temprature'"),
                          ("FROM tiny-a\nBOGUS x\n", "(line 2): command must be one of"),
                          ("SYSTEM hi\n", "no FROM line"),
                          ("FROM nope\n", "model 'nope' not found"),  # the server's answer
                          ("FROM tiny-a\n", "unsupported quantization type Q2 - supported types are")]:
        modelfile.write_text(text)
        extra = ("-q", "q2") if "quantization" in message else ()
        out = velollm(native[0], tmp_path, "create", "cli-bad", "-f", str(modelfile), *extra)
        assert out.returncode == 1 and message in out.stderr, (text, out.stderr)
    out = velollm(native[0], tmp_path, "create", "cli-bad", "-f", str(tmp_path / "absent"))
    assert out.returncode == 1 and "specified Modelfile wasn't found" in out.stderr
    assert "cli-bad:latest" not in _names(native[0])[0]


def test_show_writes_parameters_and_modelfile_as_ollama_does(native, tmp_path):
    """`parameters` is Go's `%-30s %#v` of the params layer's JSON values (a number is a float64: 0, 1e+06; a
    bool is true/false; a string keeps its non-ASCII letters), and `modelfile` is parser.Command.String:
    `PARAMETER key value`, values quoted only when they span lines or have edge spaces, so `velollm create -f`
    on it makes the same model again."""
    url = native[0]
    client = ollama.Client(host=url, timeout=60)
    assert client.create(model="go-fmt", from_="tiny-a", system=" Be brief.", license="MIT",
                         messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Ahoy\nthere"}],
                         parameters={"temperature": 0, "use_mmap": False, "top_p": 0.25, "num_ctx": 1000000,
                                     "stop": ["é", "<|eot_id|>"]}).status == "success"
    shown = client.show("go-fmt")
    assert set(shown.parameters.splitlines()) == {f"{k:<30} {v}" for k, v in [
        ("temperature", "0"), ("use_mmap", "false"), ("top_p", "0.25"), ("num_ctx", "1e+06"), ("stop", '"é"'),
        ("stop", '"<|eot_id|>"')]}
    lines = shown.modelfile.splitlines()
    assert {"PARAMETER temperature 0", "PARAMETER use_mmap false", "PARAMETER stop é",
            "PARAMETER stop <|eot_id|>", 'SYSTEM " Be brief."', "LICENSE MIT", "MESSAGE user Hi",
            'MESSAGE assistant "Ahoy', 'there"'} <= set(lines), lines
    assert lines.index("LICENSE MIT") < lines.index("MESSAGE user Hi")  # Ollama's order: licenses, then messages
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(shown.modelfile.replace("PARAMETER num_ctx 1e+06\n", "PARAMETER num_ctx 4096\n"))
    out = velollm(url, tmp_path, "create", "go-fmt-again", "-f", str(modelfile))
    assert out.returncode == 0, out.stderr
    again = httpx.post(f"{url}/api/show", json={"model": "go-fmt-again"}, timeout=60).json()
    assert (again["system"], again["license"], again["template"]) == (" Be brief.", "MIT", shown.template)
    assert again["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Ahoy\nthere"}]
    assert set(again["parameters"].splitlines()) == set(shown.parameters.splitlines()) - {f"{'num_ctx':<30} 1e+06"} | {
        f"{'num_ctx':<30} 4096"}
    for name in ("go-fmt", "go-fmt-again"):
        assert client.delete(name).status == "success"


def test_an_upstream_that_does_not_answer_leaves_the_local_store_in_charge(store, tmp_path):
    """The default `--upstream` ($OLLAMA_HOST) with no Ollama running there: the local store acts."""
    from tests.serve_process import free_port

    proc, url, _, _ = start_serve(tmp_path, "--upstream", f"http://127.0.0.1:{free_port()}", *ENGINE,
                                  env={"OLLAMA_MODELS": str(store)})
    try:
        client = ollama.Client(host=url, timeout=60)
        assert client.copy("tiny-a", "orphan").status == "success"
        assert client.create(model="orphan2", from_="orphan", system="x").status == "success"
        assert {"orphan:latest", "orphan2:latest"} <= set(_names(url)[0])
        assert client.delete("orphan").status == "success" and client.delete("orphan2").status == "success"
        with pytest.raises(ollama.ResponseError) as err:
            client.delete("orphan")
        assert (err.value.status_code, err.value.error) == (404, "model 'orphan' not found")
        with pytest.raises(ollama.ResponseError) as err:
            client.push("tiny-a")
        assert err.value.status_code == 501
    finally:
        stop_serve(proc)
