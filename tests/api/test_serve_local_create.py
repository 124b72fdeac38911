"""POST /api/create on a `velollm serve` without an upstream (its own Ollama store), through the official `ollama`
client and httpx: a quantize source refused with a 400 before any progress, clients that leave a quantization
(streamed or not) stop it, the error of a FROM path that does not exist."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, Path, Path]]:
    """(url, store, log) of a server with no upstream on a store holding `f16` (a 2-layer F16 llama)."""
    root = tmp_path_factory.mktemp("create")
    store = root / "models"
    make_store(store, _gguf(root / "f16.gguf", "F16"), ("registry.ollama.ai", "library", "f16", "latest"))
    proc, url, log, _ = start_serve(root, "--no-upstream", *ENGINE, env={"OLLAMA_MODELS": str(store)})
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
